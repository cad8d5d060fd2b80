//! Log lines shipped in `logs` frames: listed and followed (SSE) in sequence order, and a batch
//! the agent sends again (it never knows whether the first one arrived) is stored once.

use botmox_contract::logs::{LogLine, LogStream};
use botmox_e2e::{
    both_backends,
    db::Backend,
    sim::{log_line, SimAgent},
    sse::SseStream,
};

use super::*;

both_backends!(log_lines_are_listed_followed_in_order_and_never_duplicated);

fn lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
    seqs.map(|seq| {
        let mut line = log_line(seq, format!("line {seq}"));
        if seq % 2 == 0 {
            line.stream = LogStream::Stderr;
        }
        line
    })
    .collect()
}

async fn expect_follow(follow: &mut SseStream, seqs: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
    for seq in seqs {
        let event = follow.next_event(WAIT).await?;
        assert_eq!((event.event.as_deref(), event.id.clone()), (Some("log"), Some(seq.to_string())), "{event:?}");
        let line: LogLine = event.json()?;
        assert_eq!((line.seq, line.text), (seq, format!("line {seq}")));
    }
    Ok(())
}

fn seqs_of(page: &serde_json::Value) -> Vec<u64> {
    page.as_array().into_iter().flatten().filter_map(|l| l["seq"].as_u64()).collect()
}

async fn log_lines_are_listed_followed_in_order_and_never_duplicated(backend: Backend) -> anyhow::Result<()> {
    let app = spawn(backend).await?;
    let (agent_id, token) = app.pair_agent("vm-chatty").await?;
    let bot_id = create_bot(&app, "chatty", agent_id).await?;
    let agent = SimAgent::connect(sim(&app, &token)).await?;
    let logs = format!("/api/v1/bots/{bot_id}/logs");
    let mut follow = SseStream::open(app.get(&format!("{logs}?follow=true"))).await?;

    agent.send_logs(bot_id, lines(1..=3)).await?;
    expect_follow(&mut follow, 1..=3).await?;
    let page = get(&app, &logs).await?;
    assert_eq!(seqs_of(&page), [1, 2, 3]);
    assert_eq!((page[1]["stream"].as_str(), page[1]["text"].as_str()), (Some("stderr"), Some("line 2")));

    // The same batch again (no ack came back before a reconnect, say), then new lines.
    agent.send_logs(bot_id, lines(1..=3)).await?;
    agent.send_logs(bot_id, lines(4..=5)).await?;
    expect_follow(&mut follow, 4..=5).await?;
    assert_eq!(seqs_of(&get(&app, &logs).await?), [1, 2, 3, 4, 5], "stored once each, in order");
    assert_eq!(seqs_of(&get(&app, &format!("{logs}?limit=2")).await?), [4, 5], "the last lines");
    assert_eq!(seqs_of(&get(&app, &format!("{logs}?after_seq=3")).await?), [4, 5]);

    // A follower that joins late gets the recent page first, then what comes.
    let mut late = SseStream::open(app.get(&format!("{logs}?follow=true&limit=2"))).await?;
    expect_follow(&mut late, 4..=5).await?;
    agent.send_logs(bot_id, lines(6..=6)).await?;
    expect_follow(&mut late, 6..=6).await?;
    expect_follow(&mut follow, 6..=6).await?;
    // Open event streams would hold the graceful shutdown.
    drop(follow);
    drop(late);
    app.stop().await
}

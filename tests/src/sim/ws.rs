//! The WebSocket transport of the simulated agent: one task reads server frames, writes what
//! the test (or [`super::AutoMode::Run`]) sends, and beats the heart.

use futures::{SinkExt as _, StreamExt as _};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest as _, protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::{
    link::{tick, Link, Outgoing},
    ConnectError, Disconnect,
};

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/api/v1/agent/connect` with the agent token.
pub(super) async fn open(base_url: &str, token: &str) -> Result<Socket, ConnectError> {
    let url = match base_url.strip_prefix("http") {
        Some(rest) => format!("ws{rest}/api/v1/agent/connect"),
        None => return Err(anyhow::anyhow!("base URL {base_url} is not http(s)").into()),
    };
    let mut request = url.into_client_request().map_err(anyhow::Error::from)?;
    let bearer = format!("Bearer {token}").parse().map_err(anyhow::Error::from)?;
    request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, bearer);
    // The default 128 KiB buffers each way would cost a 10,000-agent fleet 2.5 GB.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await {
        Err(_) => Err(anyhow::anyhow!("the WebSocket handshake did not finish within 10 s").into()),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => Err(ConnectError::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        }),
        Ok(Err(e)) => Err(anyhow::Error::from(e).context("WebSocket connect failed").into()),
    }
}

/// The connection task: runs until the server closes, the connection breaks, or the test
/// drops it; then says why on `closed`.
pub(super) async fn run(mut socket: Socket, mut link: Link, closed: watch::Sender<Option<Disconnect>>) {
    let mut heartbeat = link.heartbeat_timer();
    let end = loop {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let answer = link.shared.on_server_text(&link, &text);
                    if let Err(e) = send_frames(&mut socket, &answer).await {
                        break Disconnect::Lost(e.to_string());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    // Finish the closing handshake, then wait (bounded) for the server to drop
                    // the TCP connection: by then it is done with this connection.
                    let _ = socket.flush().await;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), until_eof(&mut socket)).await;
                    break Disconnect::Closed { code, reason };
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite; binary frames are not ours
                Some(Err(e)) => break Disconnect::Lost(e.to_string()),
                None => break Disconnect::Lost("the server ended the stream".into()),
            },
            outgoing = link.out.recv() => match outgoing {
                Some(Outgoing::Frames(frames, done)) => {
                    let _ = done.send(send_frames(&mut socket, &frames).await.map(|()| None));
                }
                Some(Outgoing::Raw(text, done)) => {
                    let sent = socket.send(Message::text(text)).await.map_err(anyhow::Error::from);
                    let _ = done.send(sent.map(|()| None));
                }
                Some(Outgoing::Close) => {
                    let _ = socket.close(None).await;
                    break Disconnect::ByAgent;
                }
                // Dropping the socket closes the TCP connection without a close frame.
                Some(Outgoing::Drop) | None => break Disconnect::ByAgent,
            },
            () = tick(&mut heartbeat) => {
                if link.heartbeats_on() {
                    if let Err(e) = send_frames(&mut socket, &[link.shared.heartbeat_frame()]).await {
                        break Disconnect::Lost(e.to_string());
                    }
                }
            }
        }
    };
    drop(socket);
    closed.send_replace(Some(end));
}

/// Reads the raw connection until the server closes it (the WebSocket layer is done after the
/// closing handshake, the TCP connection lives until the server drops it).
async fn until_eof(socket: &mut Socket) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 512];
    if let MaybeTlsStream::Plain(tcp) = socket.get_mut() {
        while let Ok(1..) = tcp.read(&mut buf).await {}
    }
}

async fn send_frames(socket: &mut Socket, frames: &[botmox_contract::protocol::AgentFrame]) -> anyhow::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        socket.feed(Message::text(serde_json::to_string(frame)?)).await?;
    }
    socket.flush().await?;
    Ok(())
}

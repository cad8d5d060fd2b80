//! `botmox-agent tray` (cargo feature `tray`): the agent with an icon on the desktop.
//!
//! Two threads (SPEC §5): the **main thread** runs the tao event loop (GTK on Linux, which
//! tray-icon needs on the thread that owns the icon) and only draws; **another thread** runs
//! tokio with the [`controller`], which runs or watches the agent and sends a [`View`] when
//! what the tray shows changes. Menu clicks travel back as [`Action`]s over a channel.
//!
//! The icon is drawn in code ([`icon`]); what it shows is computed without the GUI
//! ([`view`]); "Pair again…" lives in [`pair_again`].
//!
//! On Linux, tray-icon shows the icon through libayatana-appindicator: a StatusNotifierItem
//! where a desktop offers one (GNOME with the AppIndicator extension, KDE, XFCE, …), else the
//! XEmbed system tray (what `trayer` and older panels host). Tooltips are not supported there,
//! so the first menu lines carry the same text.

mod controller;
mod icon;
mod pair_again;
mod view;

use std::process::ExitCode;

use tao::{
    event::Event,
    event_loop::{ControlFlow, EventLoopBuilder},
};
use tray_icon::{
    menu::{Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu},
    Icon, TrayIcon, TrayIconBuilder,
};

use self::view::View;
use crate::{paths::AgentDir, run::RunOptions};

/// From the controller to the GUI thread.
#[derive(Debug)]
pub enum UserEvent {
    View(Box<View>),
    Menu(String),
    /// The controller is done (the agent stopped): leave the event loop.
    Exit,
}

/// From the menu to the controller.
#[derive(Debug)]
pub enum Action {
    Pause,
    Resume,
    OpenPanel,
    OpenLogs,
    PairAgain,
    Quit,
    /// The outcome of the Pair again dialogs (sent by their task).
    Staged(pair_again::Outcome),
}

/// Menu item ids.
const PAUSE: &str = "pause";
const RESUME: &str = "resume";
const PANEL: &str = "panel";
const LOGS: &str = "logs";
const PAIR: &str = "pair";
const QUIT: &str = "quit";

pub fn tray(dir: AgentDir, options: RunOptions) -> ExitCode {
    #[cfg(target_os = "linux")]
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        eprintln!(
            "botmox-agent tray: no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set): \
             use `botmox-agent run`, or `botmox-agent service install`"
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = dir.create().map_err(anyhow::Error::from).and_then(|()| crate::run::init_logging(&dir)) {
        eprintln!("botmox-agent tray: {e:#}");
        return ExitCode::FAILURE;
    }
    // The tray draws no OpenGL, but GDK probes GLX as menus and icons are realised, which
    // loads Mesa (with llvmpipe, where there is no GPU driver: +55 MB resident). Still
    // single-threaded here, so setting the environment is sound; a user's GDK_GL wins.
    #[cfg(target_os = "linux")]
    if std::env::var_os("GDK_GL").is_none() {
        std::env::set_var("GDK_GL", "disable");
    }
    // tao panics when GTK cannot open the display; say it in one line instead.
    let built = std::panic::catch_unwind(|| EventLoopBuilder::<UserEvent>::with_user_event().build());
    let Ok(event_loop) = built else {
        eprintln!("botmox-agent tray: cannot open the display (is the graphical session reachable?)");
        return ExitCode::FAILURE;
    };
    let gui = event_loop.create_proxy();
    let menu_events = gui.clone();
    MenuEvent::set_event_handler(Some(move |event: MenuEvent| {
        let _ = menu_events.send_event(UserEvent::Menu(event.id.0));
    }));

    let (actions, actions_rx) = tokio::sync::mpsc::unbounded_channel();
    let controller = controller::Controller::new(dir, options, gui, actions.clone());
    let agent_thread = std::thread::Builder::new().name("agent".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("agent-worker")
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(controller.run(actions_rx)),
            Err(e) => {
                eprintln!("botmox-agent tray: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        }
    });
    if let Err(e) = agent_thread {
        eprintln!("botmox-agent tray: cannot start the agent thread: {e}");
        return ExitCode::FAILURE;
    }

    let mut tray: Option<TrayIcon> = None;
    let mut shown: Option<View> = None;
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        let Event::UserEvent(event) = event else { return };
        match event {
            UserEvent::View(view) => {
                if let Err(e) = show(&mut tray, shown.as_ref(), &view) {
                    tracing::warn!(error = %e, "cannot update the tray icon");
                }
                shown = Some(*view);
            }
            UserEvent::Menu(id) => {
                let action = match id.as_str() {
                    PAUSE => Action::Pause,
                    RESUME => Action::Resume,
                    PANEL => Action::OpenPanel,
                    LOGS => Action::OpenLogs,
                    PAIR => Action::PairAgain,
                    QUIT => Action::Quit,
                    _ => return,
                };
                let _ = actions.send(action);
            }
            UserEvent::Exit => {
                tray = None;
                *control_flow = ControlFlow::Exit;
            }
        }
    })
}

/// Creates the icon on the first view, then updates what changed.
fn show(tray: &mut Option<TrayIcon>, shown: Option<&View>, view: &View) -> anyhow::Result<()> {
    let picture = || Icon::from_rgba(icon::rgba(view.light), icon::SIZE, icon::SIZE);
    let Some(existing) = tray else {
        let built = TrayIconBuilder::new()
            .with_id("botmox-agent")
            .with_icon(picture()?)
            .with_tooltip(&view.tooltip)
            .with_menu(Box::new(menu(view)?))
            .build()?;
        *tray = Some(built);
        return Ok(());
    };
    if shown.map(|s| s.light) != Some(view.light) {
        existing.set_icon(Some(picture()?))?;
    }
    existing.set_tooltip(Some(&view.tooltip))?;
    existing.set_menu(Some(Box::new(menu(view)?)));
    Ok(())
}

/// Status lines, the bots, then the actions.
fn menu(view: &View) -> anyhow::Result<Menu> {
    let menu = Menu::new();
    for line in &view.lines {
        menu.append(&MenuItem::new(line, false, None))?;
    }
    let bots = Submenu::new(format!("Bots ({})", view.bots.len()), true);
    if view.bots.is_empty() {
        bots.append(&MenuItem::new("No bots on this host", false, None))?;
    }
    for bot in &view.bots {
        bots.append(&MenuItem::new(bot, false, None))?;
    }
    menu.append_items(&[&PredefinedMenuItem::separator(), &bots, &PredefinedMenuItem::separator()])?;
    menu.append(&MenuItem::with_id(PANEL, "Open control panel", view.server.is_some(), None))?;
    menu.append(&MenuItem::with_id(LOGS, "Open logs folder", true, None))?;
    let (id, text) = if view.paused { (RESUME, "Resume") } else { (PAUSE, "Pause") };
    menu.append(&MenuItem::with_id(id, text, view.can_pause(), None))?;
    let pair_text = if view.source == view::Source::NotPaired { "Pair…" } else { "Pair again…" };
    menu.append(&MenuItem::with_id(PAIR, pair_text, view.can_pair(), None))?;
    menu.append_items(&[&PredefinedMenuItem::separator(), &MenuItem::with_id(QUIT, "Quit", true, None)])?;
    Ok(menu)
}

import { useEffect, useState } from "react";
import { NavLink, Outlet, useLocation, useNavigate } from "react-router";
import { Loading } from "../components/Feedback";
import { logout, refresh } from "../lib/session";
import { LiveProvider, StreamHealthIndicator } from "./live";
import { useSession } from "./session";

const NAV: [string, string, boolean?][] = [
  ["/", "Overview"],
  ["/agents", "Agents"],
  ["/bots", "Bots"],
  ["/commands", "Commands"],
  ["/incidents", "Incidents"],
  ["/audit", "Audit log", true],
  ["/secrets", "Secrets", true],
  ["/tokens", "API tokens"],
  ["/users", "Users", true],
];

/** The signed-in frame: navigation, the stream's health, the user; restores a session on reload. */
export function Layout() {
  const session = useSession();
  const [restoring, setRestoring] = useState(session === null);
  const navigate = useNavigate();
  const location = useLocation();

  useEffect(() => {
    if (session) return;
    let cancelled = false;
    // A reload or a new tab: the HttpOnly refresh cookie gives a new access token.
    void refresh().then((restored) => {
      if (cancelled) return;
      setRestoring(false);
      if (!restored) navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
    });
    return () => {
      cancelled = true;
    };
    // Only when the session goes away, not on every navigation.
  }, [session === null]);

  useEffect(() => {
    // "/" focuses the page's search box, as on most list UIs.
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
      const search = document.querySelector<HTMLInputElement>("[data-search]");
      if (search) {
        e.preventDefault();
        search.focus();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  if (!session) return restoring ? <Loading what="your session" /> : null;
  const admin = session.user.role === "admin";
  return (
    <LiveProvider>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <div className="shell">
        <nav className="nav" aria-label="Main">
          <div className="brand">
            <img src="/favicon.svg" alt="" width={22} height={22} /> botmox
          </div>
          {NAV.filter(([, , adminOnly]) => admin || !adminOnly).map(([to, label]) => (
            <NavLink key={to} to={to} end={to === "/"}>
              {label}
            </NavLink>
          ))}
        </nav>
        <div className="main">
          <header className="topbar">
            <StreamHealthIndicator />
            <span className="spacer" />
            <span className="muted" data-user={session.user.username}>
              {session.user.username} <span className="badge">{session.user.role}</span>
            </span>
            <button
              className="btn small"
              onClick={() => {
                void logout().then(() => navigate("/login"));
              }}
            >
              Log out
            </button>
          </header>
          <main id="main" className="page">
            <Outlet />
          </main>
        </div>
      </div>
    </LiveProvider>
  );
}

// The panel's routes. Every page is its own chunk (loaded when first visited), so the first
// load carries only the shell.
import { createBrowserRouter } from "react-router";
import { Layout } from "./Layout";

const page = (load: () => Promise<{ default: React.ComponentType }>) => async () => ({ Component: (await load()).default });

export const router = createBrowserRouter([
  { path: "/login", lazy: page(() => import("../features/auth/LoginPage")) },
  {
    path: "/",
    Component: Layout,
    // Nothing to show while the first page's chunk loads (the shell renders at once).
    HydrateFallback: () => null,
    children: [
      { index: true, lazy: page(() => import("../features/overview/OverviewPage")) },
      { path: "agents", lazy: page(() => import("../features/agents/AgentsPage")) },
      { path: "agents/:id", lazy: page(() => import("../features/agents/AgentDetailPage")) },
      { path: "bots", lazy: page(() => import("../features/bots/BotsPage")) },
      { path: "bots/new", lazy: page(() => import("../features/bots/BotFormPage")) },
      { path: "bots/:id", lazy: page(() => import("../features/bots/BotDetailPage")) },
      { path: "bots/:id/edit", lazy: page(() => import("../features/bots/BotFormPage")) },
      { path: "commands", lazy: page(() => import("../features/commands/CommandsPage")) },
      { path: "incidents", lazy: page(() => import("../features/incidents/IncidentsPage")) },
      { path: "audit", lazy: page(() => import("../features/audit/AuditPage")) },
      { path: "secrets", lazy: page(() => import("../features/secrets/SecretsPage")) },
      { path: "tokens", lazy: page(() => import("../features/tokens/TokensPage")) },
      { path: "users", lazy: page(() => import("../features/users/UsersPage")) },
      { path: "*", lazy: page(() => import("../features/overview/NotFoundPage")) },
    ],
  },
]);

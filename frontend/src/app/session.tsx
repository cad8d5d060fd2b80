import { useSyncExternalStore } from "react";
import { getSession, subscribeSession } from "../lib/session";
import { can, type Ability, type Role } from "../lib/permissions";

export function useSession() {
  return useSyncExternalStore(subscribeSession, getSession);
}

/** Whether the signed-in user's role allows `ability`. */
export function useCan(ability: Ability): boolean {
  const session = useSession();
  return can(session?.user.role as Role | undefined, ability);
}

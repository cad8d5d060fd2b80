// What a role may do (SPEC §3): the panel hides or disables what the server would refuse, and
// says why. The server stays the authority; this only keeps people from clicking into a 403.
export type Role = "viewer" | "operator" | "admin";

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export type Ability = "control" | "ack" | "cancel" | "edit" | "admin";

const NEEDS: Record<Ability, Role> = {
  control: "operator",
  ack: "operator",
  cancel: "operator",
  edit: "admin",
  admin: "admin",
};

export function can(role: Role | undefined, ability: Ability): boolean {
  return role !== undefined && RANK[role] >= RANK[NEEDS[ability]];
}

/** The reason shown on a control the role may not use. */
export function whyNot(ability: Ability): string {
  return `needs the ${NEEDS[ability]} role`;
}

export function atLeast(role: Role | undefined, needed: Role): boolean {
  return role !== undefined && RANK[role] >= RANK[needed];
}

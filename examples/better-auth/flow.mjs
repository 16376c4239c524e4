// Drives Better Auth's server API for the tests, one JSON request per stdin line, one answer
// per stdout line that starts with ANSWER (Better Auth may log on stdout too):
// {"step": "signUp", ...} -> ANSWER {"ok": true, "result": ...} or
// ANSWER {"ok": false, "error": ..., "name": ..., "code": ...}. Callers act as a user by email: the
// cookies a sign-in set are kept per email and sent with that user's later requests.
import { createInterface } from "node:readline";
import { createJiti } from "jiti";

const ANSWER = "@@answer ";

const jiti = createJiti(import.meta.url);
const { auth } = await jiti.import("./auth.ts");
const { getMigrations } = await import("better-auth/db/migration");

const jars = new Map();

function remember(email, headers) {
  const jar = jars.get(email) ?? new Map();
  for (const line of headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    const name = pair.slice(0, at);
    const value = pair.slice(at + 1);
    if (value === "" || /max-age=0/i.test(line)) jar.delete(name);
    else jar.set(name, value);
  }
  jars.set(email, jar);
}

function headersOf(email) {
  const jar = jars.get(email);
  if (!jar) throw new Error(`${email} has not signed in`);
  return new Headers({ cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") });
}

async function as(email, call) {
  const { headers, response } = await call({ headers: headersOf(email), returnHeaders: true });
  remember(email, headers);
  return response;
}

const steps = {
  async signUp({ email, password, name }) {
    const { headers, response } = await auth.api.signUpEmail({ body: { email, password, name }, returnHeaders: true });
    remember(email, headers);
    return { userId: response.user.id, token: response.token };
  },
  async signIn({ email, password }) {
    const { headers, response } = await auth.api.signInEmail({ body: { email, password }, returnHeaders: true });
    remember(email, headers);
    return { userId: response.user.id, token: response.token };
  },
  async getSession({ as: email }) {
    const got = await as(email, (o) => auth.api.getSession(o));
    return got && { userId: got.user.id, sessionId: got.session.id, token: got.session.token, activeOrganizationId: got.session.activeOrganizationId ?? null, user: got.user };
  },
  createWorkspace: ({ as: email, name, slug }) => as(email, (o) => auth.api.createOrganization({ ...o, body: { name, slug } })),
  invite: ({ as: email, email: invitee, role, workspaceId }) =>
    as(email, (o) => auth.api.createInvitation({ ...o, body: { email: invitee, role, organizationId: workspaceId } })),
  accept: ({ as: email, invitationId }) => as(email, (o) => auth.api.acceptInvitation({ ...o, body: { invitationId } })),
  setActive: ({ as: email, workspaceId }) =>
    as(email, (o) => auth.api.setActiveOrganization({ ...o, body: { organizationId: workspaceId } })),
  listMembers: ({ as: email, workspaceId }) =>
    as(email, (o) => auth.api.listMembers({ ...o, query: { organizationId: workspaceId } })),
  signOut: ({ as: email }) => as(email, (o) => auth.api.signOut(o)),
  deleteUser: ({ as: email, password }) => as(email, (o) => auth.api.deleteUser({ ...o, body: { password } })),
  async migrations() {
    const plan = await getMigrations(auth.options, { throwOnUnsafe: false });
    return {
      toBeCreated: plan.toBeCreated.map((t) => t.table),
      toBeAdded: plan.toBeAdded.map((t) => ({ table: t.table, fields: Object.keys(t.fields) })),
      toBeAddedIndexes: plan.toBeAddedIndexes.map((i) => ({ table: i.table, name: i.name })),
      schemaProblems: plan.schemaProblems,
      unsafeChanges: plan.unsafeChanges,
      sql: (await plan.compileMigrations()).trim(),
    };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  let answer;
  try {
    const step = steps[request.step];
    if (!step) throw new Error(`unknown step ${request.step}`);
    answer = { ok: true, result: (await step(request)) ?? null };
  } catch (error) {
    answer = { ok: false, name: error?.name, code: error?.code ?? error?.body?.code, error: String(error?.message ?? error) };
  }
  process.stdout.write(ANSWER + JSON.stringify(answer) + "\n");
}
process.exit(0);

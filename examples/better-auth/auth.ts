/**
 * A Better Auth server on a database made by `dbinit init`: email and password, user deletion,
 * and the organization plugin with teams. DATABASE_URL is postgresql://... (a pg Pool) or
 * mysql://... (a mysql2/promise pool). The tests load this file, and so does `npx auth migrate --config`.
 */
import { betterAuth } from "better-auth";
import { organization } from "better-auth/plugins";
import { createPool } from "mysql2/promise";
import pg from "pg";

import { coreSchema, organizationSchema } from "./dbinit-schema";

function database(url: string) {
  if (url.startsWith("mysql")) return createPool({ uri: url, timezone: "Z" });
  return new pg.Pool({ connectionString: url });
}

const url = process.env.DATABASE_URL;
if (!url) throw new Error("Set DATABASE_URL to the database dbinit init made.");

export const auth = betterAuth({
  database: database(url),
  secret: process.env.BETTER_AUTH_SECRET,
  baseURL: process.env.BETTER_AUTH_URL ?? "http://localhost:3000",
  emailAndPassword: { enabled: true },
  user: { ...coreSchema.user, deleteUser: { enabled: true } },
  session: coreSchema.session,
  account: coreSchema.account,
  verification: coreSchema.verification,
  plugins: [organization({ teams: { enabled: true }, schema: organizationSchema })],
});

export default auth;

/**
 * Better Auth on the tables of dbinit's core schema.
 *
 * dbinit keeps its own table and column names (users, sessions, ..., snake_case columns): the
 * core's SQLAlchemy models and every package's foreign keys use them. This file tells Better Auth
 * where its models and fields live. Copy it into your application and spread it into
 * `betterAuth({...})`, and pass `organizationSchema` to the organization plugin:
 *
 *   import { betterAuth } from "better-auth";
 *   import { organization } from "better-auth/plugins";
 *   import { coreSchema, organizationSchema } from "./dbinit-schema";
 *
 *   export const auth = betterAuth({
 *     database: pool,
 *     ...coreSchema,
 *     plugins: [organization({ teams: { enabled: true }, schema: organizationSchema })],
 *   });
 *
 * `auth migrate` then has nothing to add, and Better Auth's schema check passes.
 */

export const coreSchema = {
  user: {
    modelName: "users",
    fields: {
      emailVerified: "email_verified",
      createdAt: "created_at",
      updatedAt: "updated_at",
    },
  },
  session: {
    modelName: "sessions",
    fields: {
      userId: "user_id",
      expiresAt: "expires_at",
      ipAddress: "ip_address",
      userAgent: "user_agent",
      createdAt: "created_at",
      updatedAt: "updated_at",
    },
  },
  account: {
    modelName: "accounts",
    fields: {
      userId: "user_id",
      accountId: "account_id",
      providerId: "provider_id",
      accessToken: "access_token",
      refreshToken: "refresh_token",
      idToken: "id_token",
      accessTokenExpiresAt: "access_token_expires_at",
      refreshTokenExpiresAt: "refresh_token_expires_at",
      createdAt: "created_at",
      updatedAt: "updated_at",
    },
  },
  verification: {
    modelName: "verifications",
    fields: {
      expiresAt: "expires_at",
      createdAt: "created_at",
      updatedAt: "updated_at",
    },
  },
} as const;

/** The organization plugin's `schema` option: organizations are dbinit's workspaces. */
export const organizationSchema = {
  organization: {
    modelName: "workspaces",
    fields: { createdAt: "created_at" },
  },
  member: {
    modelName: "workspace_members",
    fields: { organizationId: "workspace_id", userId: "user_id", createdAt: "created_at" },
  },
  invitation: {
    modelName: "workspace_invitations",
    fields: {
      organizationId: "workspace_id",
      teamId: "team_id",
      expiresAt: "expires_at",
      createdAt: "created_at",
      inviterId: "inviter_id",
    },
  },
  team: {
    modelName: "workspace_teams",
    fields: {
      organizationId: "workspace_id",
      memberCount: "member_count",
      createdAt: "created_at",
      updatedAt: "updated_at",
    },
  },
  teamMember: {
    modelName: "workspace_team_members",
    fields: { teamId: "team_id", userId: "user_id", membershipKey: "membership_key", createdAt: "created_at" },
  },
  session: {
    fields: { activeOrganizationId: "active_workspace_id", activeTeamId: "active_team_id" },
  },
} as const;

// The job's state queries: one key's state (GET /api/v1/keys/:key), segment counts and a segment's
// members. The operators answer (their OperatorView); this file finds the one that can and formats.
import type { JobView } from "../../engine/jobView.ts";
import type { OperatorView } from "../../engine/operator.ts";
import { MAX_PAGE_KEYS } from "../../operators/keyPages.ts";
import type { PipelineSpec } from "../validate.ts";
import type { HttpContext } from "./routes.ts";
import type { Reply, Route } from "./server.ts";

export function queryRoutes({ view, spec }: HttpContext): Route[] {
  const views = () => operatorViewsOf(view);
  const stateKey = stateKeyOf(spec);
  return [
    { method: "GET", path: "/api/v1/keys/:key", handle: ({ params }) => keyReply(views(), stateKey(params.key)) },
    { method: "GET", path: "/api/v1/segments", handle: () => segmentsReply(views()) },
    { method: "GET", path: "/api/v1/experiments", handle: () => experimentsReply(views()) },
    {
      method: "GET",
      path: "/api/v1/segments/:group/:segment",
      handle: ({ params, query }) => {
        const limit = query.get("limit") ?? undefined;
        return pageLimitError(limit) ?? membersReply(views(), { group: params.group, segment: params.segment, limit, cursor: query.get("cursor") ?? undefined });
      },
    },
  ];
}

/** The views of a job's operators that offer one. */
export function operatorViewsOf(view: JobView): OperatorView[] {
  return view.operators().flatMap((op) => (op.view === undefined ? [] : [op.view]));
}

/** The key the state holds for the id a query names: its pseudonym when the key field is pseudonymised. */
export function stateKeyOf(spec: PipelineSpec): (key: string) => string {
  const pseudonymise = spec.privacy?.pseudonymise;
  return pseudonymise?.fields.includes(spec.key) ? pseudonymise.pseudonym : (key) => key;
}

/** GET /api/v1/keys/:key, `key` as the state holds it. */
export function keyReply(views: OperatorView[], key: string): Reply {
  const state = keyState(views, key);
  // Not the raw id in the answer: with pseudonyms it is what the pipeline must not keep.
  return state === undefined ? { status: 404, json: { error: "no state is held for this key (never seen, expired or erased)" } } : { json: { key, ...state } };
}

/** GET /api/v1/experiments: each experiment's latest report (see README, Experiments). */
export function experimentsReply(views: OperatorView[]): Reply {
  const experiments = namedView(views, "experiments");
  return experiments === undefined ? { status: 404, json: { error: "this pipeline runs no experiment (a trigger rule's `experiment:`)" } } : { json: experiments({}) };
}

/** GET /api/v1/segments: members per segment of each group and per tag. */
export function segmentsReply(views: OperatorView[]): Reply {
  const segments = namedView(views, "segments");
  return segments === undefined ? noSegments() : { json: segments({}) };
}

/** What a page of a segment's members is asked with: `limit` checked by pageLimitError. */
export type MembersQuery = { group: string; segment: string; limit?: string; cursor?: string };

/** GET /api/v1/segments/:group/:segment: a page of members in key order, after `cursor` (the last key of the page before). */
export function membersReply(views: OperatorView[], { group, segment, limit, cursor }: MembersQuery): Reply {
  const members = namedView(views, "segmentMembers");
  if (members === undefined) return noSegments();
  const page = members({ group, segment, ...(limit === undefined ? {} : { limit }), ...(cursor === undefined ? {} : { cursor }) });
  if (page === undefined) return { status: 404, json: { error: `no segment "${segment}" in group "${group}"` } };
  return { json: { group, segment, ...(page as object) } };
}

/** A 400 for a page limit that is not a whole number from 1 to MAX_PAGE_KEYS; undefined when it is one, or none is given. */
export function pageLimitError(limit: string | undefined): Reply | undefined {
  if (limit === undefined || isPageLimit(limit)) return undefined;
  return { status: 400, json: { error: `limit must be a whole number from 1 to ${MAX_PAGE_KEYS}, got ${JSON.stringify(limit)}` } };
}

/**
 * What every operator holds for `key`, merged: the behaviour operator's stages and wake-ups, each
 * window operator's open windows (one list); undefined when none holds anything.
 */
function keyState(views: OperatorView[], key: string): Record<string, unknown> | undefined {
  let merged: Record<string, unknown> | undefined;
  for (const v of views) {
    const state = v.key(key) as Record<string, unknown> | undefined;
    if (state === undefined) continue;
    merged ??= {};
    for (const [field, value] of Object.entries(state)) {
      if (field === "windows" && Array.isArray(merged.windows)) merged.windows = [...merged.windows, ...(value as unknown[])];
      else if (!(field in merged)) merged[field] = value;
    }
  }
  return merged;
}

function namedView(views: OperatorView[], name: string): ((params: Readonly<Record<string, string>>) => unknown) | undefined {
  return views.find((v) => v.views?.[name] !== undefined)?.views![name];
}

function noSegments(): Reply {
  return { status: 404, json: { error: "this pipeline has no behaviour stages, so no segments" } };
}

function isPageLimit(text: string): boolean {
  return /^\d{1,4}$/.test(text) && Number(text) >= 1 && Number(text) <= MAX_PAGE_KEYS;
}

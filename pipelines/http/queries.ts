// The job's state queries: one key's state (GET /api/v1/keys/:key), segment counts and a segment's
// members. The operators answer (their OperatorView); this file finds the one that can and formats.
import type { OperatorView } from "../../engine/operator.ts";
import { MAX_PAGE_KEYS } from "../../operators/keyPages.ts";
import type { HttpContext } from "./routes.ts";
import type { Reply, Route } from "./server.ts";

export function queryRoutes({ view, spec }: HttpContext): Route[] {
  const views = () => view.operators().flatMap((op) => (op.view === undefined ? [] : [op.view]));
  const pseudonymise = spec.privacy?.pseudonymise;
  // The state is keyed by pseudonym when the key field is pseudonymised: a query names the raw id.
  const stateKey = pseudonymise?.fields.includes(spec.key) ? pseudonymise.pseudonym : (key: string) => key;
  return [
    {
      method: "GET",
      path: "/api/v1/keys/:key",
      handle: ({ params }) => {
        const key = stateKey(params.key);
        const state = keyState(views(), key);
        // Not the raw id in the answer: with pseudonyms it is what the pipeline must not keep.
        return state === undefined ? { status: 404, json: { error: "no state is held for this key (never seen, expired or erased)" } } : { json: { key, ...state } };
      },
    },
    {
      method: "GET",
      path: "/api/v1/segments",
      handle: () => {
        const segments = namedView(views(), "segments");
        return segments === undefined ? noSegments() : { json: segments({}) };
      },
    },
    {
      method: "GET",
      path: "/api/v1/segments/:group/:segment",
      handle: ({ params, query }) => {
        const members = namedView(views(), "segmentMembers");
        if (members === undefined) return noSegments();
        const limit = query.get("limit") ?? undefined;
        if (limit !== undefined && !isPageLimit(limit)) return { status: 400, json: { error: `limit must be a whole number from 1 to ${MAX_PAGE_KEYS}, got ${JSON.stringify(limit)}` } };
        const cursor = query.get("cursor") ?? undefined;
        const page = members({ group: params.group, segment: params.segment, ...(limit === undefined ? {} : { limit }), ...(cursor === undefined ? {} : { cursor }) });
        if (page === undefined) return { status: 404, json: { error: `no segment "${params.segment}" in group "${params.group}"` } };
        return { json: { group: params.group, segment: params.segment, ...(page as object) } };
      },
    },
  ];
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

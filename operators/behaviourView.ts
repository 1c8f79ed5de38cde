// What the behaviour operator shows of a user to queries: every stage's values for the user (as the
// stage's view says), the user's latest event, the wake-ups pending; and the stages' views over all
// users (segment counts and members, cluster sizes, triggers per channel).
import type { KeyedSlots, SlotState } from "../engine/keyedSlots.ts";
import type { OperatorView } from "../engine/operator.ts";
import { isoTime } from "./outputFormat.ts";
import type { StageLogic } from "./stage.ts";

type Params = Readonly<Record<string, string>>;

/**
 * The views every behaviour operator answers, whatever its stages: those of a stage it lacks answer
 * empty (no segment group, no cluster, no trigger), so a client need not know the stages.
 */
const EMPTY_VIEWS: Readonly<Record<string, (params: Params) => unknown>> = {
  segments: () => ({ groups: {}, tags: {} }),
  segmentMembers: () => undefined,
  clusters: () => ({}),
  triggersByChannel: () => ({}),
};

export function behaviourView({
  records,
  stages,
  lastEventMs,
  nowMs,
  activate,
}: {
  records: KeyedSlots;
  stages: ReadonlyArray<{ name: string; logic: StageLogic }>;
  lastEventMs: SlotState<number>;
  /** The pipeline's current event time (-Infinity before the first event of this run). */
  nowMs: () => number;
  /** Makes the stages' shared expressions read this operator's values (see StageLogic.activate). */
  activate: () => void;
}): OperatorView {
  const views: Record<string, (params: Params) => unknown> = { ...EMPTY_VIEWS };
  for (const { logic } of stages) {
    for (const [name, view] of Object.entries(logic.view?.views ?? {})) {
      views[name] = (params) => {
        activate();
        return view(params);
      };
    }
  }
  return {
    keyCount: () => records.size,
    key: (user) => {
      activate();
      // An erased user has no record: unknown, like one never seen.
      if (!records.has(user)) return undefined;
      const lastMs = lastEventMs.get(user);
      // After a restart, until an event comes, the operator's time is the user's latest event.
      const atMs = Number.isFinite(nowMs()) ? nowMs() : (lastMs ?? -Infinity);
      const values: Record<string, unknown> = {};
      const wakeUps: Array<Record<string, unknown>> = [];
      for (const { name, logic } of stages) {
        const shown = logic.view?.user(user, atMs);
        if (shown !== undefined) values[name] = shown;
        const wakeMs = logic.pendingWake?.(user);
        if (wakeMs !== undefined) wakeUps.push({ stage: name, time: isoTime(wakeMs), time_ms: wakeMs, cause: logic.view?.wakeCause?.(user) ?? `a deadline of ${name}` });
      }
      wakeUps.sort((a, b) => (a.time_ms as number) - (b.time_ms as number));
      return {
        user_id: user,
        now: Number.isFinite(atMs) ? isoTime(atMs) : null,
        now_ms: Number.isFinite(atMs) ? atMs : null,
        last_event: lastMs === undefined ? null : isoTime(lastMs),
        last_event_ms: lastMs ?? null,
        stages: values,
        wake_ups: wakeUps,
      };
    },
    views,
  };
}

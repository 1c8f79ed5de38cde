// The operator context the job gives every operator: keyed state and timers registered with the
// store under `<operator>/<state>`, restored from its last checkpoint.
import { KeyedMapState, KeyedValueState } from "./keyedState.ts";
import { SpillableValueState } from "./spillableState.ts";
import type { OperatorContext } from "./operator.ts";
import type { Checkpointable, StateStore } from "./store.ts";
import { TimerService } from "./timers.ts";

/** The name in the store of an operator's state: `<operator>/<state>`. */
export function stateName(operatorName: string, name: string): string {
  return `${operatorName}/${name}`;
}

export function storeOperatorContext(
  store: StateStore,
  operatorName: string,
  side: OperatorContext["side"],
  count: OperatorContext["count"] = () => {},
): OperatorContext {
  const restoredAndRegistered = <T extends Checkpointable>(build: (name: string, restored: Iterable<[unknown, unknown]>) => T, name: string): T => {
    const member = build(stateName(operatorName, name), store.restored(stateName(operatorName, name)));
    store.register(member);
    return member;
  };
  return {
    valueState: (name, options) => {
      // Under a memory budget, a state that may leave memory is laid out key by key on disk and read back from there.
      const budget = store.memoryBudget;
      if (budget === undefined || options?.mayLeaveMemory !== true || options.ttlMs !== undefined) {
        return restoredAndRegistered((n, restored) => new KeyedValueState(n, options, restored), name);
      }
      const { restored, disk } = store.keyedDisk(stateName(operatorName, name));
      const state = new SpillableValueState(stateName(operatorName, name), options, restored, disk);
      store.register(state);
      budget.add(state);
      return state;
    },
    mapState: (name, options) => restoredAndRegistered((n, restored) => new KeyedMapState(n, options, restored), name),
    eventTimers: (name, options) =>
      options?.isCheckpointed === false
        ? new TimerService(stateName(operatorName, `event-timers/${name}`), [], { isCheckpointed: false })
        : restoredAndRegistered((n, restored) => new TimerService(n, restored), `event-timers/${name}`),
    processingTimers: (name) => restoredAndRegistered((n, restored) => new TimerService(n, restored), `processing-timers/${name}`),
    side,
    count,
  };
}

// Reads `phases:` (the phase names, transitions on events, inactivity and in-phase timers, signal-only
// windows) into the phases stage.
import { DEFAULT_ENTERED_VAR, DEFAULT_PHASE_VAR, PHASE_OUTPUT, PHASE_WINDOW_OUTPUT, phases, type PhaseClock, type PhaseTimer, type PhaseTransition, type PhaseWindow } from "../../operators/phases.ts";
import type { StageReader } from "./stage.ts";
import { joinPath } from "../errors.ts";
import type { Reader } from "../reader.ts";

const NAME = /^[A-Za-z0-9_-]+$/;
/** BEHAVIOUR.md's phases. */
const DEFAULT_PHASES = ["awareness", "consideration", "conversion", "retention", "re_engagement"];
const CLOCKS: readonly PhaseClock[] = ["last_event", "entered"];
const FIELDS = ["names", "initial", "var", "entered_var", "transitions", "timers", "windows"];

/**
 * ```yaml
 * phases:
 *   names: [awareness, consideration, conversion, retention, re_engagement]   # the default
 *   initial: awareness              # a user's first event puts them here; default the first name
 *   var: phase                      # default phase (string)
 *   entered_var: phase_entered_at   # default phase_entered_at (double, ms)
 *   transitions:                    # on every event, in order, the first that holds wins
 *     - { to: retention, when: 'event_type == "purchase"' }
 *     - { to: conversion, from: [awareness, consideration, re_engagement], when: 'event_type == "add_to_cart"' }
 *     - { to: consideration, from: [awareness, re_engagement], when: 'event_type in ["product_view", "search"]' }
 *     - { to: awareness, from: [re_engagement], when: 'true' }
 *   timers:                         # if no event moved the user first; since: last_event (default) or entered
 *     - { to: consideration, from: [conversion], after: 24h, since: entered }
 *     - { to: consideration, from: [retention], after: 30d, since: entered }
 *     - { to: re_engagement, after: 60d }
 *   windows:                        # a signal (kind phase, name = the window) and a phase_window output
 *     - { name: retarget, in: [consideration], after: 48h }
 *     - { name: retention_check, in: [retention], after: 7d, since: entered }
 * ```
 * Transitions may read the phase and its entry time as they were before the event. `from` / `in`
 * default to every phase; a timer never applies in its own `to` phase. Timers must not form a
 * cycle (a user without events would change phase forever).
 */
export const readPhases: StageReader = (r, path, value, scope) => {
  const obj = r.object(path, value, FIELDS, ["transitions"]);
  if (!obj) return undefined;
  const at = (field: string) => joinPath(path, field);
  const phaseNames = obj.names === undefined ? DEFAULT_PHASES : r.nameList(at("names"), obj.names);
  if (!phaseNames) return undefined;
  const initial = obj.initial === undefined ? phaseNames[0] : r.choice(at("initial"), obj.initial, phaseNames);
  const phaseVar = obj.var === undefined ? DEFAULT_PHASE_VAR : r.string(at("var"), obj.var);
  const enteredVar = obj.entered_var === undefined ? DEFAULT_ENTERED_VAR : r.string(at("entered_var"), obj.entered_var);
  // Declared before the transitions are compiled: a condition may read the phase before the event.
  // A default name that is taken is reported at the field that would rename it.
  const isPhaseDeclared = phaseVar !== undefined && scope.declare(r, at("var"), phaseVar, "string");
  const isEnteredDeclared = enteredVar !== undefined && scope.declare(r, at("entered_var"), enteredVar, "double");
  const transitions = readList(r, at("transitions"), obj.transitions, true, (p, item) => {
    const t = r.object(p, item, ["to", "from", "when"], ["to", "when"]);
    if (!t) return undefined;
    const to = t.to === undefined ? undefined : r.choice(joinPath(p, "to"), t.to, phaseNames);
    const from = readPhaseList(r, joinPath(p, "from"), t.from, phaseNames);
    const compiled = t.when === undefined ? undefined : scope.compile(r, joinPath(p, "when"), t.when, ["bool"]);
    if (to === undefined || from === null || !compiled) return undefined;
    return { to, from, when: (vars) => compiled.evaluate(vars) === true } satisfies PhaseTransition;
  });
  const timers = readList(r, at("timers"), obj.timers ?? [], false, (p, item) => {
    const t = r.object(p, item, ["to", "from", "after", "since"], ["to", "after"]);
    if (!t) return undefined;
    const to = t.to === undefined ? undefined : r.choice(joinPath(p, "to"), t.to, phaseNames);
    const from = readPhaseList(r, joinPath(p, "from"), t.from, phaseNames);
    const afterMs = t.after === undefined ? undefined : r.duration(joinPath(p, "after"), t.after, "60d", { positive: true });
    const since = t.since === undefined ? "last_event" : r.choice(joinPath(p, "since"), t.since, CLOCKS);
    if (to === undefined || from === null || afterMs === undefined || since === undefined) return undefined;
    return { to, from, afterMs, since } satisfies PhaseTimer;
  });
  const windowNames = new Set<string>();
  const windows = readList(r, at("windows"), obj.windows ?? [], false, (p, item) => {
    const w = r.object(p, item, ["name", "in", "after", "since"], ["name", "after"]);
    if (!w) return undefined;
    let name = w.name === undefined ? undefined : r.string(joinPath(p, "name"), w.name, NAME);
    if (name !== undefined && (phaseNames.includes(name) || windowNames.has(name))) {
      // Signals of windows and of phase changes share the kind "phase": names must tell them apart.
      name = r.fail(joinPath(p, "name"), `"${name}" is already the name of a ${phaseNames.includes(name) ? "phase" : "window"}`);
    }
    if (name !== undefined) windowNames.add(name);
    const inPhases = readPhaseList(r, joinPath(p, "in"), w.in, phaseNames);
    const afterMs = w.after === undefined ? undefined : r.duration(joinPath(p, "after"), w.after, "48h", { positive: true });
    const since = w.since === undefined ? "last_event" : r.choice(joinPath(p, "since"), w.since, CLOCKS);
    if (name === undefined || inPhases === null || afterMs === undefined || since === undefined) return undefined;
    return { name, in: inPhases, afterMs, since } satisfies PhaseWindow;
  });
  if (!transitions || !timers || !windows || initial === undefined || !isPhaseDeclared || !isEnteredDeclared) return undefined;
  const cycle = timerCycle(phaseNames, timers);
  if (cycle) return r.fail(at("timers"), `timers form a cycle ${cycle.join(" -> ")}: a user without events would change phase forever`);
  const definition = phases({ phases: phaseNames, initial, transitions, timers, windows, phaseVar, enteredVar });
  return { definition, outputs: windows.length > 0 ? [PHASE_OUTPUT, PHASE_WINDOW_OUTPUT] : [PHASE_OUTPUT] };
};

/** A list of phase names, undefined when absent (every phase), null when bad. */
function readPhaseList(r: Reader, path: string, value: unknown, phases: readonly string[]): string[] | undefined | null {
  if (value === undefined) return undefined;
  const list = r.list(path, value, { nonEmpty: true });
  if (!list) return null;
  const chosen = list.map((item, i) => r.choice(joinPath(path, i), item, phases));
  return chosen.every((p) => p !== undefined) ? (chosen as string[]) : null;
}

/** Reads every entry (reporting all bad ones); undefined if the list or any entry is bad. */
function readList<T>(r: Reader, path: string, value: unknown, isRequired: boolean, read: (path: string, item: unknown) => T | undefined): T[] | undefined {
  const list = r.list(path, value, { nonEmpty: isRequired });
  if (!list) return undefined;
  const items = list.map((item, i) => read(joinPath(path, i), item));
  return items.every((item) => item !== undefined) ? (items as T[]) : undefined;
}

/** A cycle of phases that timers alone would go round, if there is one. */
function timerCycle(phases: readonly string[], timers: readonly PhaseTimer[]): string[] | undefined {
  const next = new Map(phases.map((p) => [p, timers.filter((t) => t.to !== p && (t.from === undefined || t.from.includes(p))).map((t) => t.to)]));
  const state = new Map<string, "open" | "done">();
  const trail: string[] = [];
  const visit = (phase: string): string[] | undefined => {
    if (state.get(phase) === "done") return undefined;
    if (state.get(phase) === "open") return [...trail.slice(trail.indexOf(phase)), phase];
    state.set(phase, "open");
    trail.push(phase);
    for (const to of next.get(phase)!) {
      const cycle = visit(to);
      if (cycle) return cycle;
    }
    trail.pop();
    state.set(phase, "done");
    return undefined;
  };
  for (const phase of phases) {
    const cycle = visit(phase);
    if (cycle) return cycle;
  }
  return undefined;
}

// Segments: per-user membership of exclusive segment groups (the first rule that holds wins, else the
// group's default) and of non-exclusive tags, re-decided on every step; entering and leaving are outputs.
import { isoTime } from "./outputFormat.ts";
import type { SlotState } from "../engine/keyedSlots.ts";
import type { StageDefinition, StageLogic, StageOutput, StageView, UserView } from "./stage.ts";
import { firstKeysAfter } from "./keyPages.ts";
import { partOf, relayoutAll, type StateShape } from "./stateShape.ts";

/** A rule over the view's variables; only `true` holds (undefined = missing data = does not hold). */
export type Condition = (vars: Record<string, unknown>) => unknown;

export type SegmentRule = {
  /** The segment (or tag) a user is in while the rule holds. */
  name: string;
  when: Condition;
  /**
   * Vars without which `when` cannot hold (it would fail on them). Checked first: a missing value
   * then costs a property read instead of a failed CEL evaluation (~20 µs). Default none.
   */
  needs?: readonly string[];
};

export type SegmentGroup = {
  /** The var holding the user's current segment, and `group` in the outputs. */
  name: string;
  /** In priority order: the first that holds wins (VIP before churned). */
  rules: SegmentRule[];
  /** The segment of a user no rule holds for, including because the data a rule needs is missing. */
  defaultSegment: string;
};

export type SegmentsOptions = {
  /** Names the stage's state. Default "segments". */
  name?: string;
  /** Exclusive groups, decided in order: a later group's rules may read an earlier group's var. */
  groups: SegmentGroup[];
  /** Non-exclusive tags: a user holds every tag whose rule holds. At most MAX_TAGS. Default none. */
  tags?: SegmentRule[];
  /** The var holding the list of the user's tags (in config order), and `group` in tag outputs. Default DEFAULT_TAGS_VAR. */
  tagsVar?: string;
};

export const DEFAULT_TAGS_VAR = "tags";

/** The output kind of a segment entry or exit. */
export const SEGMENT_OUTPUT = "segment";

/**
 * The "segment" output, one per change: a move within a group is an exit, then an enter. An enter
 * says where the user came from (`previous`: the group's segment left in the same step; null the
 * first time, and for a tag), an exit where the user goes (`next`: the segment entered instead;
 * null for a tag).
 */
export type SegmentChange = {
  output: typeof SEGMENT_OUTPUT;
  user_id: string;
  time: string;
  time_ms: number;
  group: string;
  segment: string;
} & ({ change: "enter"; previous: string | null } | { change: "exit"; next: string | null });

/** Tags are kept as a bit mask in a double: exact up to 2^53. */
export const MAX_TAGS = 52;

/** Distinct tag lists kept for reuse; beyond this, lists are built per step. */
const MAX_CACHED_TAG_LISTS = 4096;

/**
 * Per user: the index of the current segment of each group (rules.length for the default, -1
 * before the first step), then the mask of held tags.
 */
type Membership = number[];

/** A group as the logic runs it: segment names by index, the default last. */
type RunningGroup = {
  name: string;
  rules: SegmentRule[];
  segments: string[];
  /** Shared by the group's signals; frozen so no stage can change it for the others. */
  detail: Readonly<Record<string, unknown>>;
};

export function segments(options: SegmentsOptions): StageDefinition {
  const name = options.name ?? "segments";
  if ((options.tags?.length ?? 0) > MAX_TAGS) throw new Error(`segments: at most ${MAX_TAGS} tags, got ${options.tags!.length}`);
  const shape = stateShape(options);
  return {
    name,
    stateShape: shape,
    build: (ctx) => {
      const membership = ctx.userState<Membership>("membership");
      if (ctx.restoredShape) relayoutAll(membership, relayout(ctx.restoredShape, shape));
      return new SegmentsLogic(options, membership);
    },
  };
}

/** The part of the shape that holds the tags (not a group name: those are variable names). */
const TAGS_PART = "(tags)";

/**
 * The state's shape: per group (by name), the segment a user is in, known by its place among the
 * group's segments (by name, the default last); the tags a user holds, by name. Rules may change.
 */
function stateShape(options: SegmentsOptions): StateShape {
  const named = (names: string[]) => ({ parts: names.map((n): [string, StateShape] => [n, {}]) });
  const groups = options.groups.map((g): [string, StateShape] => [g.name, named([...g.rules.map((r) => r.name), g.defaultSegment])]);
  return { parts: [...groups, [TAGS_PART, named((options.tags ?? []).map((t) => t.name))]] };
}

/**
 * A user's membership restored under other groups, segments or tags, translated by name: a segment
 * gone leaves the user in none (the next step enters the one that holds, with no exit of a segment
 * that no longer exists), a new group starts with none, a tag gone is no longer held.
 */
function relayout(old: StateShape, now: StateShape): (membership: Membership) => Membership {
  const namesOf = (shape: StateShape | undefined) => (shape?.parts ?? []).map(([name]) => name);
  const oldGroups = namesOf(old).filter((name) => name !== TAGS_PART);
  const groups = namesOf(now).filter((name) => name !== TAGS_PART);
  const oldTags = namesOf(partOf(old, TAGS_PART));
  const tags = namesOf(partOf(now, TAGS_PART));
  return (membership) => {
    const next = groups.map((group) => {
      const g = oldGroups.indexOf(group);
      const was = g < 0 ? -1 : membership[g];
      return was < 0 ? -1 : namesOf(partOf(now, group)).indexOf(namesOf(partOf(old, group))[was]);
    });
    let mask = 0;
    tags.forEach((tag, i) => {
      const t = oldTags.indexOf(tag);
      if (t >= 0 && hasBit(membership[oldGroups.length], t)) mask += BITS[i];
    });
    next.push(mask);
    return next;
  };
}

class SegmentsLogic implements StageLogic {
  private readonly groups: RunningGroup[];
  private readonly tags: SegmentRule[];
  private readonly tagsVar: string;
  private readonly tagsDetail: Readonly<Record<string, unknown>>;
  /** Tag lists by mask, frozen and shared by every user holding those tags. */
  private readonly tagLists = new Map<number, readonly string[]>();
  /**
   * The users in each segment (by group, then segment index) and holding each tag: built from the
   * state on the first query and kept up to date by every change after it (a job nobody queries
   * pays nothing), so a count is a size and a page of members looks at one segment's users only.
   */
  private members: { groups: Array<Array<Set<string>>>; tags: Array<Set<string>> } | undefined;
  readonly view: StageView;

  constructor(
    options: SegmentsOptions,
    private readonly membership: SlotState<Membership>,
  ) {
    this.groups = options.groups.map((g) => ({
      name: g.name,
      rules: g.rules,
      segments: [...g.rules.map((rule) => rule.name), g.defaultSegment],
      detail: Object.freeze({ group: g.name }),
    }));
    this.tags = options.tags ?? [];
    this.tagsVar = options.tagsVar ?? DEFAULT_TAGS_VAR;
    this.tagsDetail = Object.freeze({ group: this.tagsVar });
    this.view = {
      user: (user) => this.userView(user),
      views: {
        segments: () => this.countsView(),
        segmentMembers: (params) => this.page(params),
      },
    };
  }

  step(view: UserView, out: StageOutput): void {
    const vars = view.vars;
    const groups = this.groups;
    let membership = this.membership.get(view.user);
    const isNew = membership === undefined;
    if (membership === undefined) membership = this.fresh();
    let hasChanged = false;
    for (let g = 0; g < groups.length; g++) {
      const group = groups[g];
      const index = firstHolding(group.rules, vars);
      vars[group.name] = group.segments[index];
      const was = membership[g];
      if (index === was) continue;
      const left = was >= 0 ? group.segments[was] : null;
      if (left !== null) this.change(view, out, group.name, left, "exit", group.segments[index], group.detail);
      this.change(view, out, group.name, group.segments[index], "enter", left, group.detail);
      if (this.members !== undefined) {
        if (was >= 0) this.members.groups[g][was].delete(view.user);
        this.members.groups[g][index].add(view.user);
      }
      membership[g] = index;
      hasChanged = true;
    }
    if (this.tags.length > 0) {
      const mask = heldTags(this.tags, vars);
      vars[this.tagsVar] = this.tagList(mask);
      const was = membership[groups.length];
      if (mask !== was) {
        this.tagChanges(view, out, was, mask);
        if (this.members !== undefined) {
          this.indexTags(view.user, was, false);
          this.indexTags(view.user, mask, true);
        }
        membership[groups.length] = mask;
        hasChanged = true;
      }
    }
    if (isNew) this.membership.set(view.user, membership);
    else if (hasChanged) this.membership.touch(view.user);
  }

  /** An erased user leaves the segments' members (the operator deletes the membership itself). */
  forgetUser(user: string): boolean {
    const membership = this.membership.get(user);
    if (membership !== undefined && this.members !== undefined) this.index(user, membership, false);
    return false;
  }

  /** Adds `user` to (or removes from) the members of the segments and tags of `membership`. */
  private index(user: string, membership: Membership, isIn: boolean): void {
    const groups = this.members!.groups;
    for (let g = 0; g < this.groups.length; g++) {
      if (membership[g] < 0) continue;
      if (isIn) groups[g][membership[g]].add(user);
      else groups[g][membership[g]].delete(user);
    }
    if (this.tags.length > 0) this.indexTags(user, membership[this.groups.length], isIn);
  }

  private indexTags(user: string, mask: number, isIn: boolean): void {
    for (let i = 0; i < this.tags.length; i++) {
      if (!hasBit(mask, i)) continue;
      if (isIn) this.members!.tags[i].add(user);
      else this.members!.tags[i].delete(user);
    }
  }

  /** The members index, built from the state the first time a query needs it. */
  private membersIndex(): { groups: Array<Array<Set<string>>>; tags: Array<Set<string>> } {
    if (this.members === undefined) {
      this.members = { groups: this.groups.map((g) => g.segments.map(() => new Set<string>())), tags: this.tags.map(() => new Set<string>()) };
      this.membership.forEach((membership, user) => this.index(user, membership, true));
    }
    return this.members;
  }

  /** Users per segment of each group and per tag: `{ groups: { value: { vip: 12, ... } }, tags: { top_10: 3 } }`. */
  private countsView(): { groups: Record<string, Record<string, number>>; tags: Record<string, number> } {
    const members = this.membersIndex();
    return {
      groups: Object.fromEntries(this.groups.map((group, g) => [group.name, Object.fromEntries(group.segments.map((segment, i) => [segment, members.groups[g][i].size]))])),
      tags: Object.fromEntries(this.tags.map((tag, i) => [tag.name, members.tags[i].size])),
    };
  }

  /** The user's segment in each group, and tags: undefined before the user's first step. */
  private userView(user: string): Record<string, unknown> | undefined {
    const membership = this.membership.get(user);
    if (membership === undefined) return undefined;
    const groups: Record<string, string> = {};
    this.groups.forEach((group, g) => {
      if (membership[g] >= 0) groups[group.name] = group.segments[membership[g]];
    });
    return { groups, [this.tagsVar]: this.tags.length > 0 ? this.tagList(membership[this.groups.length]) : [] };
  }

  /**
   * A page of the users in a segment (`group` a group's name, or the tags' var for a tag), in key
   * order after `cursor`; undefined for a group or segment the stage does not have.
   */
  private page(params: Readonly<Record<string, string>>): { keys: string[]; nextCursor: string | null } | undefined {
    const { group, segment } = params;
    const limit = params.limit === undefined ? undefined : Number(params.limit);
    const g = this.groups.findIndex((gr) => gr.name === group);
    let users: Set<string>;
    if (g >= 0) {
      const index = this.groups[g].segments.indexOf(segment);
      if (index < 0) return undefined;
      users = this.membersIndex().groups[g][index];
    } else if (group === this.tagsVar && this.tags.length > 0) {
      const t = this.tags.findIndex((tag) => tag.name === segment);
      if (t < 0) return undefined;
      users = this.membersIndex().tags[t];
    } else return undefined;
    return firstKeysAfter(users, params.cursor ?? null, limit);
  }

  private fresh(): Membership {
    const membership = new Array<number>(this.groups.length + 1).fill(-1);
    membership[this.groups.length] = 0;
    return membership;
  }

  /** One output and one signal per tag gained or lost, in the tags' config order. */
  private tagChanges(view: UserView, out: StageOutput, wasMask: number, mask: number): void {
    for (let i = 0; i < this.tags.length; i++) {
      const had = hasBit(wasMask, i);
      if (had === hasBit(mask, i)) continue;
      this.change(view, out, this.tagsVar, this.tags[i].name, had ? "exit" : "enter", null, this.tagsDetail);
    }
  }

  /** One output and signal; `other`: for an enter the segment left, for an exit the one entered (null: none, or a tag). */
  private change(view: UserView, out: StageOutput, group: string, segment: string, change: "enter" | "exit", other: string | null, detail: Readonly<Record<string, unknown>>): void {
    const time = isoTime(view.timeMs);
    const body: SegmentChange =
      change === "enter"
        ? { output: SEGMENT_OUTPUT, user_id: view.user, time, time_ms: view.timeMs, group, segment, change, previous: other }
        : { output: SEGMENT_OUTPUT, user_id: view.user, time, time_ms: view.timeMs, group, segment, change, next: other };
    out.emit(SEGMENT_OUTPUT, view.user, view.timeMs, body);
    view.signals.push({ kind: change === "enter" ? "segment_enter" : "segment_exit", name: segment, timeMs: view.timeMs, detail });
  }

  /** The list of the tags in `mask`: shared and frozen, so a step allocates nothing for it. */
  private tagList(mask: number): readonly string[] {
    const cached = this.tagLists.get(mask);
    if (cached !== undefined) return cached;
    const list: string[] = [];
    for (let i = 0; i < this.tags.length; i++) if (hasBit(mask, i)) list.push(this.tags[i].name);
    Object.freeze(list);
    if (this.tagLists.size < MAX_CACHED_TAG_LISTS) this.tagLists.set(mask, list);
    return list;
  }
}

/** Bit values of tags 0..MAX_TAGS-1, as doubles (bitwise operators stop at 32 bits). */
const BITS: readonly number[] = Array.from({ length: MAX_TAGS }, (_, i) => 2 ** i);

function hasBit(mask: number, i: number): boolean {
  return Math.floor(mask / BITS[i]) % 2 === 1;
}

/** Only `true` holds: no value (missing data), false or anything else does not. */
function holds(rule: SegmentRule, vars: Record<string, unknown>): boolean {
  const needs = rule.needs;
  if (needs !== undefined) for (let i = 0; i < needs.length; i++) if (vars[needs[i]] === undefined) return false;
  return rule.when(vars) === true;
}

/** Index of the first rule that holds, or rules.length (the default) when none does. */
function firstHolding(rules: readonly SegmentRule[], vars: Record<string, unknown>): number {
  for (let i = 0; i < rules.length; i++) if (holds(rules[i], vars)) return i;
  return rules.length;
}

function heldTags(tags: readonly SegmentRule[], vars: Record<string, unknown>): number {
  let mask = 0;
  for (let i = 0; i < tags.length; i++) if (holds(tags[i], vars)) mask += BITS[i];
  return mask;
}

// Where a user goes next: the transition tables of shoppers and of B2B leads, how long each step
// holds them, and what entering a step does (its page, its fields, the cart, a booked demo).
import type { Sfc32 } from "../engine/random.ts";
import {
  CATEGORIES, COLOURS, LEAD_CAMPAIGNS, LEAD_PAGES, LEAD_POSTS, LEAD_VIDEOS, PRODUCTS, SHOP_CAMPAIGNS, SHOP_PAGES, SHOP_POSTS,
  SHOP_VIDEOS, WHITEPAPERS,
} from "./catalogue.ts";
import { CONSENT_EMAIL } from "./events.ts";
import { S, STEPS, type Step } from "./steps.ts";
import type { User } from "./users.ts";

type Transitions = Partial<Record<Step, [Step, number][]>>;

const SHOPPER: Transitions = {
  start: [["view_home", 45], ["product_view", 20], ["search", 15], ["page_view", 12], ["email_open", 8]],
  view_home: [["product_view", 35], ["search", 18], ["page_view", 17], ["content_view", 7], ["cta_click", 4], ["support_contact", 1], ["end", 12]],
  page_view: [["product_view", 45], ["page_view", 12], ["search", 10], ["content_view", 5], ["end", 16]],
  product_view: [["product_view", 28], ["add_to_cart", 16], ["search", 8], ["page_view", 8], ["video_view", 3], ["cart_page", 3], ["end", 18]],
  search: [["product_view", 70], ["search", 10], ["end", 10]],
  add_to_cart: [["product_view", 35], ["cart_page", 25], ["purchase", 10], ["end", 22]],
  cart_page: [["purchase", 42], ["remove_from_cart", 15], ["product_view", 20], ["end", 25]],
  remove_from_cart: [["product_view", 35], ["cart_page", 20], ["end", 35]],
  purchase: [["page_view", 15], ["product_view", 10], ["support_contact", 3], ["end", 72]],
  content_view: [["content_view", 20], ["product_view", 30], ["video_view", 10], ["cta_click", 5], ["form_submission", 2], ["end", 20]],
  video_view: [["product_view", 35], ["content_view", 15], ["end", 30]],
  cta_click: [["product_view", 60], ["page_view", 20], ["end", 20]],
  email_open: [["email_click", 45], ["end", 55]],
  email_click: [["product_view", 60], ["page_view", 25], ["view_home", 15]],
  form_submission: [["page_view", 30], ["end", 70]],
  support_contact: [["page_view", 20], ["end", 80]],
  consent_update: [["page_view", 40], ["end", 60]],
};

const LEAD: Transitions = {
  start: [["view_home", 35], ["content_view", 25], ["page_view", 15], ["pricing", 10], ["email_open", 15]],
  view_home: [["pricing", 22], ["content_view", 22], ["page_view", 18], ["cta_click", 8], ["video_view", 5], ["end", 14]],
  page_view: [["pricing", 25], ["content_view", 20], ["page_view", 12], ["demo_page", 5], ["end", 22]],
  pricing: [["demo_page", 12], ["whitepaper_download", 10], ["content_view", 15], ["page_view", 12], ["cta_click", 10], ["form_submission", 4], ["end", 22]],
  demo_page: [["form_submission", 35], ["pricing", 15], ["end", 35]],
  content_view: [["content_view", 22], ["whitepaper_download", 14], ["cta_click", 9], ["video_view", 8], ["pricing", 14], ["end", 20]],
  whitepaper_download: [["pricing", 22], ["content_view", 20], ["cta_click", 8], ["end", 35]],
  cta_click: [["demo_page", 30], ["form_submission", 15], ["pricing", 20], ["content_view", 10], ["end", 18]],
  form_submission: [["pricing", 20], ["content_view", 15], ["end", 50]],
  video_view: [["content_view", 30], ["pricing", 20], ["end", 30]],
  demo_call: [["pricing", 30], ["page_view", 10], ["end", 60]],
  email_open: [["email_click", 45], ["end", 55]],
  email_click: [["content_view", 45], ["pricing", 25], ["whitepaper_download", 15], ["demo_page", 15]],
  support_contact: [["page_view", 20], ["end", 80]],
  consent_update: [["page_view", 40], ["end", 60]],
};

/** Transitions indexed by step code, as parallel arrays of next steps and cumulative probabilities. */
type CompiledStep = { next: Int32Array; upTo: Float64Array };

function compile(transitions: Transitions): CompiledStep[] {
  return STEPS.map((step) => {
    const choices = transitions[step] ?? [["end", 1]]; // a step with no table ends the session
    const total = choices.reduce((sum, [, weight]) => sum + weight, 0);
    let upTo = 0;
    return {
      next: Int32Array.from(choices, ([next]) => S[next]),
      upTo: Float64Array.from(choices, ([, weight]) => (upTo += weight / total)),
    };
  });
}

const SHOPPER_STEPS = compile(SHOPPER);
const LEAD_STEPS = compile(LEAD);

/** Mean seconds spent on each step before the next action (exponentially distributed, plus 1 s). */
const DWELL_MEAN_SEC: Partial<Record<Step, number>> = {
  view_home: 12, page_view: 20, pricing: 40, demo_page: 25, cart_page: 25, product_view: 35, content_view: 60,
  search: 8, add_to_cart: 10, remove_from_cart: 8, purchase: 30, email_open: 20, email_click: 3, cta_click: 4,
  form_submission: 15, whitepaper_download: 30, demo_call: 60, support_contact: 120, consent_update: 10,
};
const DWELL_MEAN_MS = Float64Array.from(STEPS, (step) => (DWELL_MEAN_SEC[step] ?? 10) * 1000);

/** Chance, at every event, that the user's next one is a consent update instead. */
export const CONSENT_UPDATE_CHANCE = 0.0005;
/** Share of dwells where the user reads on without clicking, for "long browsing without a click". */
const IDLE_CHANCE = 0.05;
const IDLE_FACTOR = 6;

/** The step after `from` (by default the user's pending one), drawn from the user's transition table. */
export function chooseNext(rng: Sfc32, user: User, from = user.step): number {
  const { next, upTo } = (user.isLead ? LEAD_STEPS : SHOPPER_STEPS)[from];
  const u = rng.next();
  for (let i = 0; i < next.length - 1; i++) if (u < upTo[i]) return next[i];
  return next[next.length - 1];
}

/** How long the user stays on the pending step before the next action. */
export function dwellMs(rng: Sfc32, user: User): number {
  if (user.step === S.video_view) return user.secondsWatched * 1000 + 1000 + rng.below(4000);
  const ms = 1000 + rng.exponential(DWELL_MEAN_MS[user.step]);
  return Math.round(rng.next() < IDLE_CHANCE ? ms * IDLE_FACTOR : ms);
}

/** Empties the cart: after a purchase, or when the user comes back having forgotten it. */
export function forgetCart(user: User): void {
  user.cartItems = 0;
  user.cartCents = 0;
}

function scrollPercent(rng: Sfc32): number {
  return Math.round(rng.next() * 100);
}

/** Makes `wanted` (or what the user can do instead) the pending event, with its page and fields; applies its effects. */
export function enter(rng: Sfc32, user: User, wanted: number): void {
  const from = user.step;
  const step = availableStep(user, wanted);
  user.step = step;
  user.scrollPercent = -1;
  switch (step) {
    case S.view_home:
      user.page = "/";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.page_view:
      user.page = rng.pick(user.isLead ? LEAD_PAGES : SHOP_PAGES);
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.pricing:
      user.page = "/pricing";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.demo_page:
      user.page = "/demo";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.cart_page:
      user.page = "/cart";
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.product_view:
      // After a search, usually the product searched for.
      if (from !== S.search || rng.next() < 0.3) user.productIndex = pickProduct(rng, user);
      user.page = PRODUCTS[user.productIndex].page;
      user.scrollPercent = scrollPercent(rng);
      break;
    case S.search:
      user.productIndex = pickProduct(rng, user);
      user.searchQuery = PRODUCTS[user.productIndex].query;
      user.page = "/cerca";
      break;
    case S.add_to_cart:
      if (user.productIndex < 0) user.productIndex = pickProduct(rng, user);
      user.page = PRODUCTS[user.productIndex].page;
      user.cartItems++;
      user.cartCents += PRODUCTS[user.productIndex].priceCents;
      break;
    case S.remove_from_cart:
      user.page = "/cart";
      user.cartCents -= Math.round(user.cartCents / user.cartItems);
      user.cartItems--;
      break;
    case S.purchase:
      user.page = "/checkout";
      user.orderCents = user.cartCents;
      forgetCart(user);
      break;
    case S.content_view:
      user.page = rng.pick(user.isLead ? LEAD_POSTS : SHOP_POSTS);
      user.scrollPercent = Math.round(Math.sqrt(rng.next()) * 100); // articles get read further
      break;
    case S.video_view: {
      const video = rng.pick(user.isLead ? LEAD_VIDEOS : SHOP_VIDEOS);
      user.page = video.page;
      user.secondsWatched = Math.max(3, Math.round(video.lengthSec * rng.next() ** 1.5));
      break;
    }
    case S.email_open:
      user.page = rng.pick(user.isLead ? LEAD_CAMPAIGNS : SHOP_CAMPAIGNS);
      break;
    case S.email_click:
    case S.cta_click:
      break; // on the page of the email or of the call to action
    case S.form_submission:
      user.page = user.isLead ? "/demo" : "/newsletter";
      if (user.isLead) user.isDemoBooked = true;
      break;
    case S.whitepaper_download:
      user.page = rng.pick(WHITEPAPERS);
      break;
    case S.demo_call:
      user.page = "/demo";
      user.isDemoBooked = false;
      break;
    case S.support_contact:
      user.page = "/supporto";
      break;
    case S.consent_update:
      user.page = "/account/privacy";
      user.consentBits ^= 1 << rng.below(3);
      break;
  }
}

/** What the user does instead of a step that needs what it lacks: a cart, or consent to campaign email. */
function availableStep(user: User, step: number): number {
  if ((step === S.cart_page || step === S.remove_from_cart || step === S.purchase) && user.cartItems === 0) return S.product_view;
  if (step === S.email_open && (user.consentBits & CONSENT_EMAIL) === 0) return S.view_home;
  return step;
}

/** Mostly the user's favourite category, otherwise anything; within a category, a few colours sell most. */
function pickProduct(rng: Sfc32, user: User): number {
  const category = rng.next() < 0.6 ? user.favouriteCategory : rng.below(CATEGORIES.length);
  const u = rng.next();
  return category * COLOURS.length + Math.floor(u * u * COLOURS.length);
}

// The simulated site, the same whatever the seed: the shop's products (a category in each colour,
// named in Italian) and the pages, posts, videos and campaigns shoppers and B2B leads see.
import { Sfc32 } from "../engine/random.ts";

export type Product = { id: string; page: string; query: string; priceCents: number; category: number };

/** Italian nouns with the adjective form they take: masculine/feminine, singular/plural. */
export const CATEGORIES = [
  { noun: "scarpe", form: 3, priceEur: 90 }, { noun: "stivali", form: 2, priceEur: 150 },
  { noun: "giacca", form: 1, priceEur: 180 }, { noun: "zaino", form: 0, priceEur: 70 },
  { noun: "borsa", form: 1, priceEur: 120 }, { noun: "maglione", form: 0, priceEur: 60 },
  { noun: "occhiali", form: 2, priceEur: 110 }, { noun: "sciarpa", form: 1, priceEur: 35 },
  { noun: "orologio", form: 0, priceEur: 240 }, { noun: "camicia", form: 1, priceEur: 45 },
  { noun: "jeans", form: 2, priceEur: 80 }, { noun: "cappello", form: 0, priceEur: 30 },
] as const;
export const COLOURS = [
  ["rosso", "rossa", "rossi", "rosse"], ["nero", "nera", "neri", "nere"], ["bianco", "bianca", "bianchi", "bianche"],
  ["blu", "blu", "blu", "blu"], ["verde", "verde", "verdi", "verdi"], ["grigio", "grigia", "grigi", "grigie"],
  ["marrone", "marrone", "marroni", "marroni"], ["giallo", "gialla", "gialli", "gialle"],
] as const;

export const PRODUCTS: Product[] = buildCatalogue();

function buildCatalogue(): Product[] {
  const rng = new Sfc32(0x5eed); // the shop is the same whatever the seed
  return CATEGORIES.flatMap((category, c) =>
    COLOURS.map((colour, k) => {
      const slug = `${category.noun}-${colour[category.form]}`;
      return {
        id: `p${String(c * COLOURS.length + k).padStart(4, "0")}`,
        page: `/prodotti/${slug}`,
        query: slug.replace("-", " "),
        priceCents: Math.round(category.priceEur * (0.7 + 0.6 * rng.next())) * 100 - 1, // 89.99
        category: c,
      };
    }),
  );
}

export const SHOP_PAGES = [...CATEGORIES.map((c) => `/prodotti/${c.noun}`), "/offerte", "/novita", "/spedizioni-e-resi", "/chi-siamo"];
export const LEAD_PAGES = ["/soluzioni/crm", "/soluzioni/marketing-automation", "/casi-studio", "/integrazioni", "/chi-siamo", "/contatti"];
export const SHOP_POSTS = ["/blog/come-scegliere-le-scarpe-da-corsa", "/blog/guida-alle-taglie", "/blog/tendenze-autunno-inverno", "/blog/cura-della-pelle"];
export const LEAD_POSTS = [
  "/blog/lead-scoring-in-5-passi", "/blog/customer-journey-b2b", "/blog/segmentazione-dinamica",
  "/blog/email-marketing-che-converte", "/blog/roi-del-crm",
];
export const WHITEPAPERS = ["/whitepaper/report-prezzi-2024", "/whitepaper/guida-al-lead-scoring", "/whitepaper/benchmark-email-marketing", "/whitepaper/crm-per-pmi"];
export const SHOP_VIDEOS = [{ page: "/video/unboxing-zaino", lengthSec: 90 }, { page: "/video/lookbook-primavera", lengthSec: 180 }];
export const LEAD_VIDEOS = [
  { page: "/video/demo-piattaforma", lengthSec: 420 }, { page: "/video/webinar-automazione", lengthSec: 1800 },
  { page: "/video/testimonianza-cliente", lengthSec: 150 },
];
export const SHOP_CAMPAIGNS = ["/email/newsletter-maggio", "/email/saldi-estivi", "/email/nuovi-arrivi"];
export const LEAD_CAMPAIGNS = ["/email/webinar-crm", "/email/nurturing-1", "/email/report-prezzi"];

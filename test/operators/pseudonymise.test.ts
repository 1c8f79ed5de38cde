import { createHmac } from "node:crypto";
import { describe, expect, it, vi } from "vitest";

/** HMACs computed by the code under test, to tell a cache hit from a computation. */
const hmacs = vi.hoisted(() => ({ count: 0 }));
vi.mock("node:crypto", async (importOriginal) => {
  const crypto = await importOriginal<typeof import("node:crypto")>();
  const createHmac = (...args: Parameters<typeof crypto.createHmac>) => {
    hmacs.count++;
    return crypto.createHmac(...args);
  };
  return { ...crypto, default: { ...crypto, createHmac }, createHmac };
});
import { PseudonymKeyInvalid, pseudonymiser } from "../../operators/pseudonymise.ts";

const KEY = "0123456789abcdef-test-key";
const OTHER_KEY = "fedcba9876543210-test-key";

describe("pseudonymiser", () => {
  it("is the base64url HMAC-SHA-256 of the id under the key, cut to 22 characters", () => {
    const expected = createHmac("sha256", KEY).update("user-42").digest("base64url").slice(0, 22);
    expect(pseudonymiser(KEY)("user-42")).toBe(expected);
    expect(expected).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("gives the same pseudonym for the same id and key, across pseudonymisers and cache hits", () => {
    const a = pseudonymiser(KEY);
    const b = pseudonymiser(KEY, { cacheSize: 0 });
    const first = a("user-42");
    expect(a("user-42")).toBe(first);
    expect(b("user-42")).toBe(first);
    expect(b("user-42")).toBe(first);
  });

  it("gives different pseudonyms for different ids, and for the same id under different keys", () => {
    const p = pseudonymiser(KEY);
    expect(p("user-1")).not.toBe(p("user-2"));
    expect(pseudonymiser(OTHER_KEY)("user-1")).not.toBe(p("user-1"));
  });

  it("never returns the raw id, nor a plain unkeyed hash of it", () => {
    const p = pseudonymiser(KEY);
    const ids = ["user-42", "mario.rossi@example.it", "", "a"];
    for (const id of ids) {
      const pseudonym = p(id);
      expect(pseudonym).not.toBe(id);
      if (id.length > 3) expect(pseudonym).not.toContain(id);
      expect(pseudonym).not.toBe(createHmac("sha256", "").update(id).digest("base64url").slice(0, 22));
    }
  });

  it("computes a returning id once, and again only after the oldest ids were evicted from its cache", () => {
    const p = pseudonymiser(KEY, { cacheSize: 2 });
    const before = hmacs.count;
    for (const id of ["a", "b", "a", "b"]) p(id);
    expect(hmacs.count - before).toBe(2);
    for (const id of ["c", "a"]) p(id);
    expect(hmacs.count - before).toBe(4);
  });

  it("keeps answering right when its cache is full and evicts", () => {
    const p = pseudonymiser(KEY, { cacheSize: 2 });
    const plain = pseudonymiser(KEY, { cacheSize: 0 });
    for (const id of ["a", "b", "c", "a", "d", "b", "a"]) expect(p(id)).toBe(plain(id));
  });

  it("refuses a key shorter than 16 bytes, counting UTF-8 bytes", () => {
    expect(() => pseudonymiser("")).toThrow(PseudonymKeyInvalid);
    expect(() => pseudonymiser("")).toThrow(/pseudonymisation key: is empty; expected at least 16 bytes/);
    expect(() => pseudonymiser("0123456789abcde")).toThrow(/pseudonymisation key: is 15 bytes long; expected at least 16/);
    expect(() => pseudonymiser("0123456789abcdef")).not.toThrow();
    // 8 characters, 16 bytes.
    expect(() => pseudonymiser("éééééééé")).not.toThrow();
  });
});

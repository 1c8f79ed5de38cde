// Pages of keys for queries over many users (the members of a segment): in key order, each page
// after the last key of the one before, so a page stays stable while users come and go.

/** Keys per page when the query names no limit, and the most it may ask for. */
export const DEFAULT_PAGE_KEYS = 100;
export const MAX_PAGE_KEYS = 1000;

/**
 * The first `limit` of `keys` (in string order) after `cursor`, and the cursor of the next page
 * (null: no more). One pass, keeping only the page sorted: no sorted copy of them all.
 */
export function firstKeysAfter(keys: Iterable<string>, cursor: string | null, limit: number = DEFAULT_PAGE_KEYS): { keys: string[]; nextCursor: string | null } {
  const size = Number.isFinite(limit) ? Math.max(1, Math.min(MAX_PAGE_KEYS, Math.floor(limit))) : DEFAULT_PAGE_KEYS;
  // One more than the page: whether another page follows.
  const keep = size + 1;
  const page: string[] = [];
  for (const key of keys) {
    if (cursor !== null && key <= cursor) continue;
    if (page.length === keep && key >= page[keep - 1]) continue;
    if (page.length === keep) page.pop();
    page.splice(insertionPoint(page, key), 0, key);
  }
  const hasMore = page.length > size;
  const shown = hasMore ? page.slice(0, size) : page;
  return { keys: shown, nextCursor: hasMore ? shown[shown.length - 1] : null };
}

/** Where `key` goes in the sorted `page`. */
function insertionPoint(page: string[], key: string): number {
  let low = 0;
  let high = page.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (page[mid] < key) low = mid + 1;
    else high = mid;
  }
  return low;
}

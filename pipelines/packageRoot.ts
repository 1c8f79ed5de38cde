// Where the pipelines' modules run from: the TypeScript sources (through tsx) or their build in
// dist/, one folder deeper (bin/flusso.js picks), and the package's root folder either way.
export const IS_BUILT = import.meta.url.endsWith(".js");
export const PACKAGE_ROOT = new URL(IS_BUILT ? "../../" : "../", import.meta.url);

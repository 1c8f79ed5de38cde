// How many named states one job's LMDB store can hold, stated once for the store (which opens its
// environment with room for that many named databases) and for pipeline validation (which bounds
// what a pipeline may register, so no job fails at run time with MDB_DBS_FULL).

/** Named databases of the store's LMDB environment: one per registered state, plus its own two. */
export const MAX_STATE_DATABASES = 512;

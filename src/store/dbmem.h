/* A private allocator for SQLite whose pages go back to the kernel as soon
 * as SQLite holds no memory (see dbmem.c). Used by meao_db_low_memory(). */
#ifndef MEAO_STORE_DBMEM_H
#define MEAO_STORE_DBMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Make SQLite allocate from the private region; only before SQLite
 * initialises (the first open, or after sqlite3_shutdown). */
bool meao_dbmem_install(void);

/* When SQLite holds no block, give every page of the region back; true when
 * it did. */
bool meao_dbmem_release(void);

/* Blocks SQLite holds now (for tests). */
size_t meao_dbmem_live(void);

#endif

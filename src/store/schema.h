/* Forward-only schema migrations: meao_schema[i] takes user_version i to i+1.
 * Never edit a released entry; append a new one. */
#ifndef MEAO_STORE_SCHEMA_H
#define MEAO_STORE_SCHEMA_H

#include <stddef.h>

extern const char *const meao_schema[];
extern const size_t meao_schema_count;

#endif

/* openapi — the OpenAPI 3.1 document of the HTTP API, built from the route
 * table (api.c) so that it always lists every endpoint. */
#ifndef QUERN_OPENAPI_H
#define QUERN_OPENAPI_H

/* The document as JSON text; built once, owned by the module. */
extern const char *openapi_json;
/* Builds it (called once at start). */
void openapi_build(void);
void openapi_free(void);

#endif

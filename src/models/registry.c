/* The model registry: every model the binary knows, by name. Each model
 * defines its vtable in its own file; this table is the only place listing
 * them. */
#include <string.h>

#include "supair/model.h"
#include "supair/srnn.h"
#include "supair/supair.h"

static const sp_model_vtable *const models[] = {
    &sp_supair_model,
    &sp_srnn_model,
};

const sp_model_vtable *sp_model_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (strcmp(models[i]->name, name) == 0) return models[i];
    return NULL;
}

const char *sp_model_names(void) { return "supair"; }

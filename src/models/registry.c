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

/* Built from the table once, so the list in messages cannot drift from it. */
const char *sp_model_names(void) {
    static char names[256];
    if (!names[0])
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
            if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
            strncat(names, models[i]->name, sizeof names - strlen(names) - 1);
        }
    return names;
}

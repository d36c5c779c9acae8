/* The public header compiles as strict C99 on its own, and its initializer
 * works. Built by cshim_test.go with -std=c99 -pedantic -Wall -Wextra -Werror. */
#include "lifeline.h"

int header_c99_check(void);
int header_c99_check(void) {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_request req = {0};
    lifeline_callback cb = 0;
    (void)req;
    (void)cb;
    return err.status == LIFELINE_OK && sizeof(lifeline_client) == 8 && LIFELINE_ABI_VERSION >= 1;
}

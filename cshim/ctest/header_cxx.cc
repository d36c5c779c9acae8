// The public header compiles as C++ (extern "C", no C-only constructs),
// and its initializer works there. Built by cshim_test.go with
// -std=c++11 -pedantic -Wall -Wextra -Werror.
#include "lifeline.h"

#include <type_traits>

static_assert(std::is_same<lifeline_client, uint64_t>::value, "handles are 64-bit integers");
static_assert(std::is_standard_layout<lifeline_error>::value, "error record is plain data");

int header_cxx_check();
int header_cxx_check() {
    lifeline_error err = LIFELINE_ERROR_INIT;
    lifeline_callback cb = [](lifeline_op, int32_t, void *) {};
    (void)cb;
    int32_t (*fn)(lifeline_client, const lifeline_request *, lifeline_response **, lifeline_error *) =
        &lifeline_request_do;
    (void)fn;
    return err.status == LIFELINE_OK && err.message == nullptr;
}

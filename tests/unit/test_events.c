/*
 * events_format_id / events_parse_id: an event's public id is "evt_" and
 * its sequence number in 16 digits (written by hand in the usual range,
 * by snprintf outside it), and reads back as that number.
 */
#include "t.h"

#include <inttypes.h>
#include <stdint.h>

#include "events.h"

TEST(event_ids_are_sixteen_digits_and_read_back)
{
    static const int64_t ids[] = {0, 1, 9, 10, 12345, 999999999, INT64_C(1000000000000000),
                                  INT64_C(9999999999999999), INT64_C(10000000000000000),
                                  INT64_MAX, -1, -42, INT64_MIN};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char got[32], want[32];
        events_format_id(ids[i], got);
        snprintf(want, sizeof want, "evt_%016" PRId64, ids[i]);
        CHECK(!strcmp(got, want));
        if (ids[i] >= 0)
            CHECK(events_parse_id(got) == ids[i]);
    }
    char got[32];
    events_format_id(7, got);
    CHECK(!strcmp(got, "evt_0000000000000007"));
}

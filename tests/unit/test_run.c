/* The run state machine's table (run.c) against its numbered invariants. */
#include "t.h"
#include "run.h"

static const enum run_status all[] = {RS_QUEUED, RS_RUNNING, RS_PAUSED, RS_INTERACTION_REQUIRED,
                                      RS_REVIEW_REQUIRED, RS_COMPLETED, RS_FAILED, RS_TIMED_OUT,
                                      RS_DENIED, RS_CANCELING, RS_CANCELED};
#define N (sizeof all / sizeof all[0])

TEST(invariant_1_no_transition_leaves_a_terminal_state)
{
    for (size_t i = 0; i < N; i++) {
        if (!run_status_terminal(all[i]))
            continue;
        for (size_t j = 0; j < N; j++)
            CHECK(!run_can_move(all[i], all[j]));   /* not even to itself */
    }
}

TEST(terminal_statuses_are_exactly_the_five)
{
    int n = 0;
    for (size_t i = 0; i < N; i++)
        n += run_status_terminal(all[i]);
    CHECK_EQ_INT(n, 5);
    CHECK(run_status_terminal(RS_COMPLETED) && run_status_terminal(RS_FAILED) &&
          run_status_terminal(RS_TIMED_OUT) && run_status_terminal(RS_DENIED) &&
          run_status_terminal(RS_CANCELED));
}

TEST(invariant_2_the_table_allows_the_lifecycle_and_refuses_the_rest)
{
    /* the paths of API.md and RUNTIME.md */
    CHECK(run_can_move(RS_QUEUED, RS_RUNNING));
    CHECK(run_can_move(RS_RUNNING, RS_COMPLETED));
    CHECK(run_can_move(RS_RUNNING, RS_FAILED));
    CHECK(run_can_move(RS_RUNNING, RS_TIMED_OUT));
    CHECK(run_can_move(RS_RUNNING, RS_INTERACTION_REQUIRED));
    CHECK(run_can_move(RS_INTERACTION_REQUIRED, RS_RUNNING));
    CHECK(run_can_move(RS_RUNNING, RS_REVIEW_REQUIRED));
    CHECK(run_can_move(RS_REVIEW_REQUIRED, RS_COMPLETED));
    CHECK(run_can_move(RS_REVIEW_REQUIRED, RS_FAILED));
    CHECK(run_can_move(RS_RUNNING, RS_CANCELING));
    CHECK(run_can_move(RS_CANCELING, RS_CANCELED));
    CHECK(run_can_move(RS_QUEUED, RS_CANCELED));
    CHECK(run_can_move(RS_QUEUED, RS_INTERACTION_REQUIRED));   /* approval hold */
    CHECK(run_can_move(RS_INTERACTION_REQUIRED, RS_QUEUED));   /* approved */
    CHECK(run_can_move(RS_INTERACTION_REQUIRED, RS_DENIED));   /* refused */
    CHECK(run_can_move(RS_QUEUED, RS_DENIED));                 /* policy */
    CHECK(run_can_move(RS_RUNNING, RS_QUEUED));                /* lease lost, retry */
    /* and refuses what makes no sense */
    CHECK(!run_can_move(RS_QUEUED, RS_COMPLETED));
    CHECK(!run_can_move(RS_QUEUED, RS_REVIEW_REQUIRED));
    CHECK(!run_can_move(RS_CANCELING, RS_RUNNING));
    CHECK(!run_can_move(RS_CANCELING, RS_COMPLETED));
    CHECK(!run_can_move(RS_REVIEW_REQUIRED, RS_RUNNING));
    CHECK(!run_can_move(RS_PAUSED, RS_COMPLETED));
    for (size_t i = 0; i < N; i++)
        CHECK(!run_can_move(all[i], all[i]));   /* no status moves to itself */
    /* out of range is refused, never read past the table */
    CHECK(!run_can_move((enum run_status)99, RS_QUEUED));
    CHECK(!run_can_move(RS_QUEUED, (enum run_status)-1));
}

TEST(status_names_round_trip)
{
    for (size_t i = 0; i < N; i++)
        CHECK_EQ_INT(run_status_parse(run_status_name(all[i])), all[i]);
    CHECK_EQ_INT(run_status_parse("bogus"), -1);
    CHECK_EQ_INT(run_status_parse(NULL), -1);
    CHECK_EQ_STR(run_status_name(RS_INTERACTION_REQUIRED), "interaction_required");
}

TEST(a_new_run_is_queued_attempt_1_with_a_snapshot_of_retry_settings)
{
    json_t *task = json_pack("{s:s, s:s, s:{s:i, s:i, s:s, s:b}, s:{s:i}, s:s}", "id", "task_x",
                             "project_id", "p", "settings", "max_retries", 2, "retry_delay_ms",
                             50, "retry_backoff", "exponential", "require_review", 1, "input",
                             "a", 1, "priority", "high");
    json_t *over = json_pack("{s:i}", "b", 2);
    json_t *run = run_new_doc(task, over, "agent-1");
    CHECK_EQ_STR(json_string_value(json_object_get(run, "status")), "queued");
    CHECK_EQ_INT(json_integer_value(json_object_get(run, "attempt")), 1);   /* invariant 4 */
    CHECK(json_is_null(json_object_get(run, "started_at")));               /* invariant 5 */
    CHECK(json_is_null(json_object_get(run, "completed_at")));
    CHECK(json_is_null(json_object_get(run, "lease_expires_at")));          /* invariant 3 */
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(run, "input"), "a")), 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(run, "input"), "b")), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(run, "agent_id")), "agent-1");
    CHECK_EQ_INT(json_integer_value(json_object_get(run, "max_retries")), 2);
    CHECK(json_is_true(json_object_get(run, "require_review")));
    json_t *pub = run_public(run);
    CHECK(!json_object_get(pub, "max_retries") && !json_object_get(pub, "retry_delay_ms"));
    CHECK(json_object_get(pub, "attempt") != NULL);
    json_decref(pub);
    json_decref(run);
    json_decref(over);
    json_decref(task);
}

/*
 * api — the routing table: every endpoint, its handler and the scopes that
 * may call it.  http.c matches routes in this order.
 */
#include "api.h"

void api_runs_connection_token(struct req *r);

#define R SCOPE_TASK_READ
#define W SCOPE_TASK_WRITE
#define K SCOPE_WORKER
#define A SCOPE_ADMIN
#define P "/api/projects/:project_id"
#define RUN P "/tasks/:task_id/runs/:id"

const struct route api_routes[] = {
    {"GET", "/healthz", api_ops_healthz, SCOPE_PUBLIC},
    {"GET", "/readyz", api_ops_readyz, SCOPE_PUBLIC},
    {"GET", "/metrics", api_ops_metrics, SCOPE_PUBLIC},
    {"GET", "/openapi.json", api_ops_openapi, SCOPE_PUBLIC},
    {"GET", "/", api_ops_dashboard, SCOPE_PUBLIC},
    {"GET", "/index.html", api_ops_dashboard, SCOPE_PUBLIC},
    {"GET", "/app.js", api_ops_dashboard, SCOPE_PUBLIC},
    {"GET", "/style.css", api_ops_dashboard, SCOPE_PUBLIC},
    {"GET", "/artifacts/:project_id/:run_id", api_artifacts_public, SCOPE_PUBLIC},

    {"POST", "/api/projects", api_projects_create, SCOPE_ROOT},
    {"GET", "/api/projects", api_projects_list, R | K},
    {"POST", P "/api_keys", api_keys_create, A},
    {"GET", P "/api_keys", api_keys_list, A},
    {"DELETE", P "/api_keys/:id", api_keys_delete, A},

    {"POST", P "/definitions", api_defs_create, W},
    {"GET", P "/definitions", api_defs_list, R},
    {"GET", P "/definitions/:id", api_defs_get, R},
    {"PATCH", P "/definitions/:id", api_defs_update, W},
    {"DELETE", P "/definitions/:id", api_defs_delete, W},
    {"POST", P "/definitions/:id/trigger", api_defs_trigger, W},

    {"POST", P "/tasks/batch", api_tasks_batch, W},
    {"GET", P "/tasks/queued_ids", api_tasks_queued_ids, R | K},
    {"POST", P "/tasks", api_tasks_create, W},
    {"GET", P "/tasks", api_tasks_list, R},
    {"GET", P "/tasks/:task_id", api_tasks_get, R},
    {"PATCH", P "/tasks/:task_id", api_tasks_update, W},
    {"DELETE", P "/tasks/:task_id", api_tasks_delete, W},
    {"POST", P "/tasks/:task_id/run", api_tasks_run, W},
    {"POST", P "/tasks/:task_id/cancel", api_tasks_cancel, W},
    {"POST", P "/tasks/:task_id/retry", api_tasks_retry, W},
    {"POST", P "/tasks/:task_id/pause", api_tasks_pause, W},
    {"POST", P "/tasks/:task_id/resume", api_tasks_resume, W},
    {"GET", P "/tasks/:task_id/schedule", api_tasks_schedule, R},

    {"GET", P "/tasks/:task_id/runs", api_runs_list, R | K},
    {"POST", P "/tasks/:task_id/runs", api_runs_create, W},
    {"GET", RUN, api_runs_get, R | K},
    {"PATCH", RUN, api_runs_patch, W | K},
    {"POST", RUN "/append_log", api_runs_append_log, W | K},
    {"GET", RUN "/logs", api_runs_logs, R | K | SCOPE_RUN_TOKEN},
    {"GET", RUN "/session_logs", api_runs_session_logs, R | K},
    {"GET", RUN "/stream", api_runs_stream, R | K | SCOPE_RUN_TOKEN},
    {"PATCH", RUN "/set_output", api_runs_set_output, W | K},
    {"POST", RUN "/cancel", api_runs_cancel, W},
    {"POST", RUN "/interaction", api_runs_interaction, W},
    {"POST", RUN "/review", api_runs_review, W},
    {"POST", RUN "/checkpoints", api_runs_checkpoint_add, W | K},
    {"GET", RUN "/checkpoints", api_runs_checkpoint_list, R | K},
    {"POST", RUN "/heartbeat", api_runs_heartbeat, W | K},
    {"GET", RUN "/connection_token", api_runs_connection_token, R | K},
    {"POST", RUN "/command", api_runs_command, W | SCOPE_RUN_TOKEN},
    {"POST", RUN "/artifacts/presign", api_artifacts_presign, R | K},
    {"GET", RUN "/artifacts/content", api_artifacts_download, R | K},
    {"POST", RUN "/artifacts", api_artifacts_upload, W | K},
    {"GET", RUN "/artifacts", api_artifacts_list, R | K},
    {"POST", RUN "/storage_access", api_storage_access, W | K},
    {"POST", P "/storage", api_storage_create, W},
    {"GET", P "/storage", api_storage_list, R},

    {"GET", P "/runs", api_runs_project_list, R | K},
    {"GET", P "/task-runs/:run_id", api_runs_get_by_id, R | K},
    {"GET", P "/logs", api_logs_grouped, R | K},
    {"GET", P "/events/stream", api_events_stream, R},

    {"POST", P "/workers/lease", api_workers_lease, W | K},
    {"POST", P "/workers/report", api_workers_report, W | K},

    {"POST", P "/triggers", api_triggers_create, A},
    {"GET", P "/triggers", api_triggers_list, A},
    {"GET", P "/triggers/:id", api_triggers_get, A},
    {"DELETE", P "/triggers/:id", api_triggers_delete, A},
    {"POST", "/hooks/:trigger_id", api_hooks_receive, SCOPE_PUBLIC},
    {"POST", P "/webhooks", api_webhooks_create, A},
    {"GET", P "/webhooks", api_webhooks_list, A},
    {"GET", P "/webhooks/:id", api_webhooks_get, A},
    {"DELETE", P "/webhooks/:id", api_webhooks_delete, A},
    {"GET", P "/webhooks/:id/deliveries", api_webhooks_deliveries, A},
    {"GET", P "/policy", api_policy_get, A},
    {"PUT", P "/policy", api_policy_put, A},
    {"POST", P "/secrets", api_secrets_create, A},
    {"GET", P "/secrets", api_secrets_list, A},
    {"DELETE", P "/secrets/:name", api_secrets_delete, A},
    {"POST", RUN "/relay_message", api_runs_relay_message, W},
    {0, 0, 0, 0},
};

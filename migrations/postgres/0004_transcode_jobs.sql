-- Transcode jobs: one row per job (an upload's transcode, a recording's mixdown, or
-- a request that came over the bus). A worker claims a job by moving it to running
-- with a lease; a worker that dies leaves a lease that runs out, and the job is
-- claimed again. Each move writes its transcode.jobs event in the same transaction.
CREATE TABLE transcode_jobs (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,           -- transcode | mixdown
    owner_id     TEXT,                       -- the user who asked, if any
    recording_id TEXT,                       -- mixdown: the recording
    spec         TEXT    NOT NULL,           -- JSON, the job (transcoder::JobSpec)
    status       TEXT    NOT NULL,           -- queued | running | retrying | completed | failed
    stage        TEXT,
    percent      BIGINT NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    worker_id    TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    result       TEXT,                       -- JSON, once completed
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX transcode_jobs_owner ON transcode_jobs (owner_id, created_at);
CREATE INDEX transcode_jobs_recording ON transcode_jobs (recording_id, created_at);
CREATE INDEX transcode_jobs_open ON transcode_jobs (status) WHERE status IN ('queued', 'running', 'retrying');

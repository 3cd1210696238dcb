"""The job's transitions as Redis scripts: each move is atomic, so workers, API processes
and the sweeper never disagree about a job. Every allowed move is in
`common.jobs.model.TRANSITIONS`; the callers pass the allowed sources from there.

Keys (under the cache prefix): `job:<id>` a hash of the job's state, `job:<id>:chunk:<i>`
a chunk's results as JSON, `jobs:active` a sorted set of unfinished jobs scored by their
last progress (what the sweeper scans), `jobs:active:<owner>` a set of each key's
unfinished jobs (what `max_jobs_per_key` counts), `job-idem:<owner>:<key>` the job an
Idempotency-Key made.
"""

from __future__ import annotations

# A job that ends leaves its owner's set of unfinished jobs, whose key is the active
# index's followed by the owner (so every script keeps its KEYS as they were).
# Needs KEYS[1] job, KEYS[2] index.
_LEAVE_OWNER = """
local function leave_owner(id)
  local owner = redis.call('HGET', KEYS[1], 'owner') or ''
  redis.call('SREM', KEYS[2] .. ':' .. owner, id)
end
"""

# Whether the job is complete once its chunks are all recorded, decided here only:
# a job with inline rows succeeds at once; one read from an object ("finalize") waits
# for its results object, written by its own step. Needs KEYS[1] job, KEYS[2] index.
_COMPLETE = _LEAVE_OWNER + """
local function complete(now)
  local n = tonumber(redis.call('HGET', KEYS[1], 'n_chunks') or '0')
  local done = tonumber(redis.call('HGET', KEYS[1], 'chunks_done') or '0')
  if n == 0 or done < n then return 'counted' end
  if redis.call('HEXISTS', KEYS[1], 'input_object') == 1 then return 'finalize' end
  redis.call('HSET', KEYS[1], 'status', 'succeeded', 'finished_at', now, 'updated_at', now)
  local id = redis.call('HGET', KEYS[1], 'job_id')
  redis.call('ZREM', KEYS[2], id)
  leave_owner(id)
  return 'finished'
end
"""

# KEYS: job hash, active index, chunk key. ARGV: chunk JSON, chunk rows, now, ttl.
# Returns "finished" to the one caller that completes the job, "finalize" when the job's
# results object is still to write (again on a redelivered last chunk, so a crash
# between the two never leaves it running), "counted", "duplicate" (this chunk was
# recorded before) or "ignored" (the job is gone or has ended).
RECORD_CHUNK = (
    _COMPLETE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return 'ignored'
end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'EX', ARGV[4]) then
  local again = complete(ARGV[3])
  if again == 'counted' then return 'duplicate' end
  return again
end
redis.call('HINCRBY', KEYS[1], 'rows_done', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[3], redis.call('HGET', KEYS[1], 'job_id'))
return complete(ARGV[3])
"""
)

# KEYS: job hash, active index. ARGV: n_rows, n_chunks, chunk_rows, now, chunk starts
# (JSON, '' when uniform). Sizes a job whose rows a worker read from its input object;
# 0 if it has ended.
SIZE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'n_rows', ARGV[1], 'n_chunks', ARGV[2], 'chunk_rows', ARGV[3],
  'updated_at', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'chunk_starts', ARGV[5]) end
redis.call('ZADD', KEYS[2], ARGV[4], redis.call('HGET', KEYS[1], 'job_id'))
return 1
"""

# KEYS: job hash, active index. ARGV: new status, now, error JSON ('' for none),
# stalled-before ('' for any; else only a job with no progress since then moves),
# then the statuses it may move from. Returns 1 if it moved.
TRANSITION = _LEAVE_OWNER + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated_at') or '0')
if ARGV[4] ~= '' and updated > tonumber(ARGV[4]) then return 0 end
for i = 5, #ARGV do
  if status == ARGV[i] then
    local id = redis.call('HGET', KEYS[1], 'job_id')
    if ARGV[1] == 'running' then
      redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'updated_at', ARGV[2])
      redis.call('ZADD', KEYS[2], ARGV[2], id)
    else
      redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'updated_at', ARGV[2])
      redis.call('ZREM', KEYS[2], id)
      leave_owner(id)
    end
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
    return 1
  end
end
return 0
"""

# KEYS: active index. ARGV: stalled-before, job key prefix, at most how many.
# The ids of unfinished jobs with no progress since ARGV[1]; drops ids whose job expired
# or has ended (the index is only a hint: the job's own hash is the truth).
STALLED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local stalled = {}
for _, id in ipairs(ids) do
  local status = redis.call('HGET', ARGV[2] .. id, 'status')
  if status == 'queued' or status == 'running' then
    table.insert(stalled, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return stalled
"""

# How many of an owner's jobs are unfinished. The set is exact for every job that ended
# through these scripts; one that expired unfinished (its hash gone at job_ttl_seconds)
# is dropped here, when the count matters: only at the limit, so below it this is SCARD.
_ACTIVE_JOBS = """
local function active_jobs(set, job_prefix, limit)
  local n = redis.call('SCARD', set)
  if n < limit then return n end
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local status = redis.call('HGET', job_prefix .. id, 'status')
    if status ~= 'queued' and status ~= 'running' then redis.call('SREM', set, id) end
  end
  return redis.call('SCARD', set)
end
"""

# KEYS: job hash, active index, owner's set. ARGV: ttl, created_at, limit (0: none), job
# key prefix, then the hash's fields and values. Creates the job unless its owner already
# has `limit` unfinished jobs: returns 0 once created, else that count (nothing written).
CREATE = (
    _ACTIVE_JOBS
    + """
local limit = tonumber(ARGV[3])
if limit > 0 then
  local active = active_jobs(KEYS[3], ARGV[4], limit)
  if active >= limit then return active end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local id = redis.call('HGET', KEYS[1], 'job_id')
redis.call('ZADD', KEYS[2], ARGV[2], id)
redis.call('SADD', KEYS[3], id)
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 0
"""
)

# KEYS: owner's set. ARGV: job key prefix, limit. The owner's unfinished jobs (exact at
# and past the limit; below it, possibly counting jobs that expired unfinished).
ACTIVE = _ACTIVE_JOBS + """
return active_jobs(KEYS[1], ARGV[1], tonumber(ARGV[2]))
"""

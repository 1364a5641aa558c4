-- Shared by every transition script (prepended by TaskStore). Keys are derived from the prefix
-- (ARGV[1]) inside the scripts, so taskbroker needs a single Redis node, not a cluster.
local prefix = ARGV[1]
local deadlines = prefix .. ':deadlines'
local leases = prefix .. ':leases'
local events = prefix .. ':events'
-- Pending tasks by when the timeout daemon publishes their message again unless one is claimed
-- first (reconciliation: a message that was never confirmed, or was lost in RabbitMQ).
-- `republish_after` (seconds) is defined by TaskStore ahead of this prelude (a setting).
local unclaimed = prefix .. ':unclaimed'
-- Delayed tasks by when they are due (not_before, epoch seconds): the timeout daemon releases
-- the due ones (release_due). `{prefix}:delayed_counts` holds how many each scheduler has (metrics).
local delayed = prefix .. ':delayed'
local delayed_counts = prefix .. ':delayed_counts'

local function task_key(id)
  return prefix .. ':task:' .. id
end

-- Attributes longer than this many bytes of JSON live in a string key of their own, not in the
-- task's hash: a hash holding one value longer than hash-max-listpack-value (64 bytes by default)
-- is stored as a hash table, 2-4x the memory of the compact listpack its other (short) fields fit
-- in. Shorter attributes stay in the hash: no key of their own to write, read and expire.
local inline_attributes_max = 64

local function attributes_key(id)
  return prefix .. ':attributes:' .. id
end

local function live_key(scheduler)
  return prefix .. ':live:' .. scheduler
end

-- The whole record of a task, as a flat field/value list (empty for a task not stored): its
-- hash, its id (the hash does not repeat what its key says) and its attributes.
local function task_record(id)
  local record = redis.call('HGETALL', task_key(id))
  if #record == 0 then return record end
  local inline = false
  for i = 1, #record, 2 do
    if record[i] == 'attributes' then inline = true; break end
  end
  record[#record + 1] = 'id'
  record[#record + 1] = id
  local attributes = not inline and redis.call('GET', attributes_key(id))
  if attributes then
    record[#record + 1] = 'attributes'
    record[#record + 1] = attributes
  end
  return record
end

-- What transitions read of a task, in one HMGET; nil for a task that is not stored.
local function read_task(id)
  local f = redis.call('HMGET', task_key(id), 'state', 'scheduler', 'attempts', 'owner', 'events',
    'lease_owner', 'lease_until', 'timeout', 'idem', 'callback_url', 'attributes', 'retry')
  if not f[1] then return nil end
  return {id = id, state = f[1], scheduler = f[2], attempts = f[3] or '0', owner = f[4] or '',
    events = f[5], lease_owner = f[6], lease_until = f[7], timeout = f[8], idem = f[9],
    callback_url = f[10], attributes_inline = f[11] and true or false, retry = f[12]}
end

-- Idempotency keys ({prefix}:idem:{scheduler}:{hash}) name the live task that holds them.
-- The live task holding an idempotency key, or false (a stale key is ignored, then overwritten).
local function idempotency_holder(idem)
  if idem == '' then return false end
  local id = redis.call('GET', idem)
  if not id then return false end
  local state = redis.call('HGET', task_key(id), 'state')
  if state == 'pending' or state == 'running' or state == 'delayed' then return id end
  return false
end

-- Free a task's idempotency key (if it still names this task): a new task may then take it.
local function release_idempotency_key(task)
  if task.idem and redis.call('GET', task.idem) == task.id then redis.call('DEL', task.idem) end
end

-- Record a state change in the event stream, in the same script as the change itself, so there
-- is never a transition without its event. Returns the task's new `events` field (the ids of its
-- entries, space separated), which the caller writes with the rest of its change: that is how
-- GET /task/{id}/events finds a task's events in O(its events), with no per-task key.
-- `events_max_length` is defined by TaskStore ahead of this prelude (a setting).
-- `extra` (optional) is a flat list of more field/value pairs (a delay's reason and not_before).
local function emit(task, state, now, extra)
  local event_id
  if extra then
    event_id = redis.call('XADD', events, 'MAXLEN', '~', events_max_length, '*',
      'task', task.id, 'scheduler', task.scheduler, 'state', state, 'attempt', task.attempts,
      'owner', task.owner, 'at', now, unpack(extra))
  else
    event_id = redis.call('XADD', events, 'MAXLEN', '~', events_max_length, '*',
      'task', task.id, 'scheduler', task.scheduler, 'state', state, 'attempt', task.attempts,
      'owner', task.owner, 'at', now)
  end
  if task.events then return task.events .. ' ' .. event_id end
  return event_id
end

-- Retained final tasks, per scheduler and final state, scored by finish time in whole
-- milliseconds (exact in a double, so a listing's cursor can name a score): what GET /tasks
-- lists with ?state= and what the bulk retry reads. Written by write_final, the one way into a
-- final state, and trimmed here by that state's retention, so the index never outgrows what is
-- retained; a member whose hash expired before the trim reached it is skipped by the listing.
local function final_key(scheduler, state)
  return prefix .. ':final:' .. scheduler .. ':' .. state
end
local final_states = {'complete', 'failed', 'aborted', 'timeout'}

-- Failed and timed-out tasks are kept longer than the others (TASKBROKER_FAILED_RETENTION), so
-- an operator can find and re-run them. `failed_retention_ms` is defined by TaskStore ahead of
-- this prelude (a setting); `retention_ms` is the callers' TASKBROKER_RETENTION.
local function final_retention(state, retention_ms)
  if state == 'failed' or state == 'timeout' then return failed_retention_ms end
  return retention_ms
end

-- A final index's score for a time (epoch seconds, text): whole milliseconds.
local function final_score(now)
  return math.floor(tonumber(now) * 1000)
end

-- Drop an index's entries older than its state's retention, as of `score`; how many went.
local function trim_final_index(key, state, score, retention_ms)
  local oldest_kept = score - tonumber(final_retention(state, retention_ms))
  return redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. oldest_kept)
end

-- The list `groups[name]`, made on first use: a batch's ids or entries gathered per scheduler.
local function group_of(groups, name)
  local group = groups[name]
  if not group then
    group = {}
    groups[name] = group
  end
  return group
end

-- One command for many members (ZREM, SREM, or ZADD with score/member pairs) instead of one
-- call per task: a batch script's cost is then its per-task reads and writes only. unpack()
-- takes a few thousand values at most, so the values go a thousand at a time (pairs stay whole).
local function call_in_chunks(command, key, values)
  for i = 1, #values, 1000 do
    redis.call(command, key, unpack(values, i, math.min(i + 999, #values)))
  end
end

-- Write the final index entries of tasks that reached one final state at one time
-- (`final_entries`: scheduler -> score/id pairs): one ZADD (a thousand pairs a call) and one
-- trim per scheduler, however many tasks a batch script made final.
local function index_final(final_entries, state, now, retention_ms)
  local score = final_score(now)
  for scheduler, entries in pairs(final_entries) do
    local key = final_key(scheduler, state)
    call_in_chunks('ZADD', key, entries)
    trim_final_index(key, state, score, retention_ms)
  end
end

-- A scheduler's count of delayed tasks goes down by `by` (the field goes at zero).
local function lower_delayed_count(scheduler, by)
  if redis.call('HINCRBY', delayed_counts, scheduler, -by) <= 0 then
    redis.call('HDEL', delayed_counts, scheduler)
  end
end

-- A task leaves the delayed index (released, or final while delayed): the index and the
-- scheduler's count lose it together.
local function undelay(task)
  redis.call('ZREM', delayed, task.id)
  lower_delayed_count(task.scheduler, 1)
end

-- Move a live task (as read_task read it) into `delayed` until `not_before` (epoch seconds,
-- text): its message, if any, is no longer wanted (a duplicate is dropped at claim), a running
-- task's lease goes, and an event `delayed` says why (`reason`: delay, retry or manual). The
-- one way into the delayed state, for every script (create writes its own record, then
-- indexes it through here with `fresh`). It leaves the deadline index and the live set alone:
-- a live task is in both already; a caller reviving a final task (a manual retry) adds it to
-- them, and removes the record's TTL, itself.
local function delay_task(task, not_before, reason, now, fresh)
  local key = task_key(task.id)
  local event = emit(task, 'delayed', now, {'reason', reason, 'not_before', not_before})
  redis.call('HSET', key, 'state', 'delayed', 'not_before', not_before, 'events', event)
  if not fresh then
    if task.lease_owner then
      redis.call('HDEL', key, 'lease_owner', 'lease_until')
      redis.call('ZREM', leases, task.id)
    end
    redis.call('ZREM', unclaimed, task.id)
  end
  if task.state ~= 'delayed' then redis.call('HINCRBY', delayed_counts, task.scheduler, 1) end
  redis.call('ZADD', delayed, not_before, task.id)
  task.state = 'delayed'
  task.events = event
end

-- Write a live task's final state (the task as read_task read it) and start its retention
-- countdown; a task with a callback_url gets a webhook delivery due now in {prefix}:webhooks
-- (scored by due time), in this same script, so none is ever missed. Leaves the deadline index
-- and live set to the caller: finalize, or expire, which removes a whole batch at once. With
-- `final_entries` (a table: scheduler -> score/id pairs) the final index entry is left to the
-- caller too, which writes a batch's entries with index_final once.
local function write_final(task, state, now, retention_ms, result, err, final_entries)
  retention_ms = final_retention(state, retention_ms)
  local key = task_key(task.id)
  local change = {'state', state, 'finished_at', now, 'events', emit(task, state, now)}
  if result then change[#change + 1] = 'result'; change[#change + 1] = result end
  if err then change[#change + 1] = 'error'; change[#change + 1] = err end
  redis.call('HSET', key, unpack(change))
  if task.lease_owner then
    redis.call('HDEL', key, 'lease_owner', 'lease_until')
    redis.call('ZREM', leases, task.id)
  end
  redis.call('PEXPIRE', key, retention_ms)
  if not task.attributes_inline then redis.call('PEXPIRE', attributes_key(task.id), retention_ms) end
  release_idempotency_key(task)
  if task.callback_url then redis.call('ZADD', prefix .. ':webhooks', now, task.id) end
  local entries = final_entries or {}
  local group = group_of(entries, task.scheduler)
  group[#group + 1] = final_score(now)
  group[#group + 1] = task.id
  if not final_entries then index_final(entries, state, now, retention_ms) end
end

-- Make a live task final: every transition to a final state but expire's goes through here, so
-- none can leave a final task behind in an index.
local function finalize(task, state, now, retention_ms, result, err, final_entries)
  write_final(task, state, now, retention_ms, result, err, final_entries)
  redis.call('ZREM', deadlines, task.id)
  if task.state == 'delayed' then undelay(task) else redis.call('ZREM', unclaimed, task.id) end
  redis.call('SREM', live_key(task.scheduler), task.id)
end

-- Bring a retained failed, timed-out or aborted task back to life by hand (POST
-- /task/{id}/retry and the bulk retry): pending (and due for reconciliation's republish, as a
-- new task is, so a publish that fails is never the end of it) or, with a not_before, delayed.
-- Its attempts go on counting; `rerun_attempts` marks where the consumer-crash limit
-- (TASKBROKER_MAX_ATTEMPTS, in claim) starts counting again. The final-state fields and the
-- retention TTL go; it leaves the final index and a webhook delivery still due for its old
-- final state (its next final state sends one). Returns the new state; or false and 'kept' if
-- the task is not in a state that may be retried (the caller reads the state to say why), false
-- and 'unscheduled' if its scheduler was deleted since (no queue would take its message).
local function rerun(task, now, timeout, not_before)
  if task.state ~= 'failed' and task.state ~= 'timeout' and task.state ~= 'aborted' then
    return false, 'kept'
  end
  if redis.call('HEXISTS', prefix .. ':schedulers', task.scheduler) == 0 then
    return false, 'unscheduled'
  end
  local key = task_key(task.id)
  redis.call('ZREM', final_key(task.scheduler, task.state), task.id)
  redis.call('ZREM', prefix .. ':webhooks', task.id)
  redis.call('HDEL', key, 'finished_at', 'result', 'lease_owner', 'lease_until', 'webhook_attempts',
    'not_before')
  redis.call('PERSIST', key)
  if not task.attributes_inline then redis.call('PERSIST', attributes_key(task.id)) end
  local state
  if not_before ~= '' then
    state = 'delayed'
    delay_task(task, not_before, 'manual', now, false)
  else
    state = 'pending'
    task.events = emit(task, 'retried', now)
    redis.call('ZADD', unclaimed, tonumber(now) + republish_after, task.id)
  end
  redis.call('HSET', key, 'state', state, 'timeout', timeout, 'rerun_attempts', task.attempts,
    'events', task.events)
  redis.call('ZADD', deadlines, timeout, task.id)
  redis.call('SADD', live_key(task.scheduler), task.id)
  return state
end

-- A task is live: delayed, pending or running.
local function is_live(state)
  return state == 'pending' or state == 'running' or state == 'delayed'
end

-- Extend `consumer`'s lease of task `id` to `lease_until` if it still holds it (running under its
-- lease): true; else false (aborted, timed out, finished elsewhere or taken over). renew and
-- heartbeat both go through here.
local function renew_lease(id, consumer, lease_until)
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'lease_owner')
  if fields[1] == 'running' and fields[2] == consumer then
    redis.call('HSET', key, 'lease_until', lease_until)
    redis.call('ZADD', leases, lease_until, id)
    return true
  end
  return false
end

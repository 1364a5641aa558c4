-- claim: pending, or running under a lapsed lease -> running under this consumer's lease.
-- A live lease held by another consumer is never taken: that is what keeps one run at a time.
-- ARGV: prefix, id, consumer, now, lease_until, max_attempts, retention_ms
local id, consumer = ARGV[2], ARGV[3]
local now, lease_until = tonumber(ARGV[4]), ARGV[5]
local max_attempts, retention_ms = tonumber(ARGV[6]), ARGV[7]
local task = read_task(id)
if not task then return {'gone'} end
-- A delayed task's message is a stale duplicate (of a publish before its retry): it is
-- published again when it is due.
if task.state == 'delayed' then return {'delayed'} end
if task.state ~= 'pending' and task.state ~= 'running' then return {'final', task.state} end
if task.state == 'running' and tonumber(task.lease_until or '0') > now then return {'busy'} end
if tonumber(task.timeout) <= now then
  finalize(task, 'timeout', ARGV[4], retention_ms, false, 'timed out before it could run')
  return {'expired'}
end
local attempts = tonumber(task.attempts)
-- Lost consumers may take TASKBROKER_MAX_ATTEMPTS attempts, or the task's retry policy's
-- max_attempts if that is more (docs/retries.md): attempts count both kinds of failure.
if task.retry then
  max_attempts = math.max(max_attempts, tonumber(string.match(task.retry, '^%d+')))
end
-- A task re-run by hand (retry) counts its crashes from there: read only past the limit, so the
-- common claim pays nothing for it.
if attempts >= max_attempts and
    attempts - tonumber(redis.call('HGET', task_key(id), 'rerun_attempts') or '0') >= max_attempts then
  finalize(task, 'failed', ARGV[4], retention_ms, false,
    'gave up after ' .. attempts .. ' attempts: every attempt ended without a result ' ..
    '(its consumer was lost: killed, out of memory or disconnected)')
  return {'exhausted'}
end
task.attempts = tostring(attempts + 1)
redis.call('HSET', task_key(id), 'state', 'running', 'started_at', ARGV[4], 'attempts', task.attempts,
  'lease_owner', consumer, 'lease_until', lease_until, 'events', emit(task, 'running', ARGV[4]))
redis.call('ZADD', leases, lease_until, id)
redis.call('ZREM', unclaimed, id)
return {'claimed', task_record(id)}

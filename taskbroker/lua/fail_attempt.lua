-- fail_attempt: a failed attempt of a task with a retry policy, running under this consumer's
-- lease -> delayed until `not_before` (a retry), or failed when no retry is made. The error
-- joins the task's `errors` (the latest few attempts); a retry not before the task's timeout
-- is not made: the task fails, saying so. A task that was aborted, timed out or taken over in
-- the meantime keeps its state, as in finish.
-- ARGV: prefix, id, consumer, now, retention_ms, error, not_before (epoch seconds, or '' for
-- no retry), kept errors, why-no-retry note (appended to the error when a retry past the
-- timeout is refused)
-- Returns 'delayed', 'failed', or the state kept instead (false for a task not stored).
local task = read_task(ARGV[2])
if not task or task.state ~= 'running' or task.lease_owner ~= ARGV[3] then
  return task and task.state or false
end
local now, err, not_before = ARGV[4], ARGV[6], ARGV[7]
local key = task_key(task.id)
local errors = cjson.decode(redis.call('HGET', key, 'errors') or '[]')
errors[#errors + 1] = {attempt = tonumber(task.attempts), error = err, at = tonumber(now)}
while #errors > tonumber(ARGV[8]) do table.remove(errors, 1) end
redis.call('HSET', key, 'errors', cjson.encode(errors), 'error', err)
if not_before ~= '' and tonumber(not_before) < tonumber(task.timeout) then
  delay_task(task, not_before, 'retry', now)
  return 'delayed'
end
if not_before ~= '' then err = err .. ARGV[9] end
finalize(task, 'failed', now, ARGV[5], false, err)
return 'failed'

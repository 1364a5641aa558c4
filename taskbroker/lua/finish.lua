-- finish: running under this consumer's lease -> complete or failed. A task that was aborted,
-- timed out or taken over in the meantime keeps its state: a late result never overwrites it.
-- ARGV: prefix, id, consumer, state, now, retention_ms, result (JSON or ''), error (or '')
local task = read_task(ARGV[2])
if not task or task.state ~= 'running' or task.lease_owner ~= ARGV[3] then
  return task and task.state or false
end
local result, err = false, false
if ARGV[7] ~= '' then result = ARGV[7] end
if ARGV[8] ~= '' then err = ARGV[8] end
finalize(task, ARGV[4], ARGV[5], ARGV[6], result, err)
return 'ok'

-- finish: running under this consumer's lease -> complete or failed. A task that was aborted,
-- timed out or taken over in the meantime keeps its state: a late result never overwrites it.
-- ARGV: prefix, id, consumer, state, now, retention_ms, result (JSON or ''), error (or '')
local id, consumer = ARGV[2], ARGV[3]
local fields = redis.call('HMGET', task_key(id), 'state', 'lease_owner')
if fields[1] ~= 'running' or fields[2] ~= consumer then
  return fields[1] or false
end
local result, err = false, false
if ARGV[7] ~= '' then result = ARGV[7] end
if ARGV[8] ~= '' then err = ARGV[8] end
finalize(id, ARGV[4], ARGV[5], ARGV[6], result, err)
return 'ok'

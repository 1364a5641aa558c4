-- claim: pending, or running under a lapsed lease -> running under this consumer's lease.
-- A live lease held by another consumer is never taken: that is what keeps one run at a time.
-- ARGV: prefix, id, consumer, now, lease_until, max_attempts, retention_ms
local id, consumer = ARGV[2], ARGV[3]
local now, lease_until = tonumber(ARGV[4]), ARGV[5]
local max_attempts, retention_ms = tonumber(ARGV[6]), ARGV[7]
local key = task_key(id)
local fields = redis.call('HMGET', key, 'state', 'lease_until', 'timeout', 'attempts')
local state = fields[1]
if not state then return {'gone'} end
if state ~= 'pending' and state ~= 'running' then return {'final', state} end
if state == 'running' and tonumber(fields[2] or '0') > now then return {'busy'} end
if tonumber(fields[3]) <= now then
  finalize(id, 'timeout', ARGV[4], retention_ms, false, 'timed out before it could run')
  return {'expired'}
end
local attempts = tonumber(fields[4])
if attempts >= max_attempts then
  finalize(id, 'failed', ARGV[4], retention_ms, false,
    'gave up after ' .. attempts .. ' attempts: every attempt ended without a result ' ..
    '(its consumer was lost: killed, out of memory or disconnected)')
  return {'exhausted'}
end
redis.call('HSET', key, 'state', 'running', 'started_at', ARGV[4], 'attempts', attempts + 1,
  'lease_owner', consumer, 'lease_until', lease_until)
redis.call('ZADD', leases, lease_until, id)
emit(id, 'running', ARGV[4])
return {'claimed', redis.call('HGETALL', key)}

-- requeue: after their message was republished (and confirmed), lapsed running tasks -> pending.
-- Compare-and-set on the lapsed lease: a task a consumer has claimed again is left alone.
-- ARGV: prefix, now, id...
local now = tonumber(ARGV[2])
local count = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'lease_until')
  if fields[1] == 'running' and tonumber(fields[2] or '0') <= now then
    redis.call('HSET', key, 'state', 'pending')
    redis.call('HDEL', key, 'lease_owner', 'lease_until')
    redis.call('ZREM', leases, id)
    emit(id, 'requeued', ARGV[2])
    count = count + 1
  end
end
return count

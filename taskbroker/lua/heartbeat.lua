-- heartbeat: a consumer's one round trip per heartbeat interval. It extends the leases this
-- consumer holds (as renew does), writes the consumer's inventory record with the tasks it still
-- holds, lets that record expire one lease from now unless the next heartbeat renews it, and
-- answers whether the consumer's scheduler is paused. One script, so the inventory never claims
-- a task whose lease this same call found lost, and pausing costs no round trip of its own.
-- ARGV: prefix, consumer, lease_until, now, lease_ms, scheduler, record (JSON object of the
-- consumer's fixed fields), id...
local consumer, lease_until, now, lease_ms, scheduler = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local lost, held = {}, {}
for i = 8, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'lease_owner')
  if fields[1] == 'running' and fields[2] == consumer then
    redis.call('HSET', key, 'lease_until', lease_until)
    redis.call('ZADD', leases, lease_until, id)
    held[#held + 1] = id
  else
    lost[#lost + 1] = id
  end
end
local record_key = prefix .. ':consumer:' .. consumer
redis.call('HSET', record_key, 'record', ARGV[7], 'scheduler', scheduler, 'last_heartbeat', now,
  'running', table.concat(held, ' '))
redis.call('PEXPIRE', record_key, lease_ms)
redis.call('ZADD', prefix .. ':consumers', lease_until, consumer)
local paused = redis.call('SISMEMBER', prefix .. ':paused', scheduler)
return {lost, paused}

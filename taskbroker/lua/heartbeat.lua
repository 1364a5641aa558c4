-- heartbeat: a consumer's one round trip per heartbeat interval. It extends the leases this
-- consumer holds (renew_lease, as renew does), writes the consumer's inventory record with the tasks it still
-- holds, lets that record expire one lease from now unless the next heartbeat renews it, and
-- answers whether the consumer's scheduler is paused. One script, so the inventory never claims
-- a task whose lease this same call found lost, and pausing costs no round trip of its own.
-- ARGV: prefix, consumer, lease_until, now, lease_ms, scheduler, record (JSON object of the
-- consumer's fixed fields), id...
local consumer, lease_until, now, lease_ms, scheduler = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local lost, held = {}, {}
for i = 8, #ARGV do
  if renew_lease(ARGV[i], consumer, lease_until) then held[#held + 1] = ARGV[i] else lost[#lost + 1] = ARGV[i] end
end
local record_key = prefix .. ':consumer:' .. consumer
redis.call('HSET', record_key, 'record', ARGV[7], 'scheduler', scheduler, 'last_heartbeat', now,
  'running', table.concat(held, ' '))
redis.call('PEXPIRE', record_key, lease_ms)
redis.call('ZADD', prefix .. ':consumers', lease_until, consumer)
local paused = redis.call('SISMEMBER', prefix .. ':paused', scheduler)
return {lost, paused}

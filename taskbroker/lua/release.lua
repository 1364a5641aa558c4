-- release: a consumer shutting down gives up tasks it could not finish. Their lease lapses at
-- once and the attempt is not counted; the requeue path then republishes them, exactly as for
-- a consumer that died, so there is one recovery mechanism, not two.
-- ARGV: prefix, consumer, id...
local consumer = ARGV[2]
local released = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'lease_owner', 'attempts', 'scheduler')
  if fields[1] == 'running' and fields[2] == consumer then
    redis.call('HSET', key, 'lease_until', 0, 'attempts', math.max(tonumber(fields[3]) - 1, 0))
    redis.call('ZADD', leases, 0, id)
    released[#released + 1] = id
    released[#released + 1] = fields[4]
  end
end
return released

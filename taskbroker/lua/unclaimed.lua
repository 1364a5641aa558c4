-- unclaimed: pending tasks whose message is due to be published again (none claimed them within
-- republish_after of their last publish), with their schedulers (read only, but for index
-- entries of tasks no longer pending, which it drops).
-- ARGV: prefix, now, limit
local ids = redis.call('ZRANGE', unclaimed, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HMGET', task_key(id), 'state', 'scheduler')
  if fields[1] == 'pending' then
    out[#out + 1] = id
    out[#out + 1] = fields[2]
  else
    redis.call('ZREM', unclaimed, id)
  end
end
return out

-- republished: after the timeout daemon published these pending tasks' messages again (and
-- RabbitMQ confirmed them), mark them published and set when the next republish is due. Each
-- republish of one task waits twice as long as the one before (capped at 64 x republish_after),
-- so a task waiting out a long backlog costs a few duplicate messages, not one per interval.
-- ARGV: prefix, now, id...
local now = tonumber(ARGV[2])
local count = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  if redis.call('HGET', key, 'state') == 'pending' then
    local times = redis.call('HINCRBY', key, 'republished', 1)
    redis.call('HSET', key, 'published', '1')
    redis.call('ZADD', unclaimed, now + republish_after * 2 ^ math.min(times, 6), id)
    count = count + 1
  end
end
return count

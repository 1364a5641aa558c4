-- published: mark live tasks whose message RabbitMQ confirmed, so a request repeating their
-- idempotency key may be told of them (create answers 'unconfirmed' until then), and a late
-- discard of the request that created them leaves them alone. Returns the ids marked: a task
-- missing from the answer was discarded or has ended.
-- ARGV: prefix, id...
local marked = {}
for i = 2, #ARGV do
  local key = task_key(ARGV[i])
  local state = redis.call('HGET', key, 'state')
  if is_live(state) then
    redis.call('HSET', key, 'published', '1')
    marked[#marked + 1] = ARGV[i]
  end
end
return marked

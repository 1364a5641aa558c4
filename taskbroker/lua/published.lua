-- published: mark tasks whose message RabbitMQ confirmed, so a request repeating their
-- idempotency key may be told of them (create answers 'unconfirmed' until then).
-- ARGV: prefix, id...
for i = 2, #ARGV do
  local key = task_key(ARGV[i])
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'published', '1') end
end
return 'ok'

-- republish_soon: pending tasks whose publish just failed become due for reconciliation now,
-- so the next sweep publishes them (tasks no longer in the unclaimed index are left alone).
-- ARGV: prefix, now, id...
for i = 3, #ARGV do redis.call('ZADD', unclaimed, 'XX', ARGV[2], ARGV[i]) end
return 'ok'

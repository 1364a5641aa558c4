-- pause: mark a scheduler paused ('1') or not ('0'); its consumers read the mark on their next
-- heartbeat. Refused for a scheduler that is not registered, so no mark outlives its scheduler
-- (delete_scheduler removes it too).
-- ARGV: prefix, name, paused
local name = ARGV[2]
if redis.call('HEXISTS', prefix .. ':schedulers', name) == 0 then return 'gone' end
if ARGV[3] == '1' then
  redis.call('SADD', prefix .. ':paused', name)
else
  redis.call('SREM', prefix .. ':paused', name)
end
return 'ok'

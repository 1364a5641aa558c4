-- register_scheduler: idempotent for the same definition, refused for a different one.
-- Its task defaults (retry policy, attempt_timeout) go to {prefix}:scheduler_defaults too, in
-- the form the create script reads without decoding JSON.
-- ARGV: prefix, name, definition (canonical JSON), defaults (SchedulerDefinition.defaults())
local schedulers = prefix .. ':schedulers'
local existing = redis.call('HGET', schedulers, ARGV[2])
if not existing then
  redis.call('HSET', schedulers, ARGV[2], ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', prefix .. ':scheduler_defaults', ARGV[2], ARGV[4]) end
  return {'created'}
end
if existing == ARGV[3] then return {'same'} end
return {'conflict', existing}

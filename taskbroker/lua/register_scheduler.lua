-- register_scheduler: idempotent for the same definition, refused for a different one.
-- ARGV: prefix, name, definition (canonical JSON)
local schedulers = prefix .. ':schedulers'
local existing = redis.call('HGET', schedulers, ARGV[2])
if not existing then
  redis.call('HSET', schedulers, ARGV[2], ARGV[3])
  return {'created'}
end
if existing == ARGV[3] then return {'same'} end
return {'conflict', existing}

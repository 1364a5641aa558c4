-- read: whole task records (hash and attributes, read together), an empty list for a task that
-- is not stored. Read only.
-- ARGV: prefix, id...
local out = {}
for i = 2, #ARGV do out[#out + 1] = task_record(ARGV[i]) end
return out

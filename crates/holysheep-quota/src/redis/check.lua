-- One quota check, atomic: the arithmetic of gcra.rs (TenantState::check) on a tenant's hash.
-- KEYS[1]: the tenant's hash, {quota:TENANT}:state
-- ARGV: now_ms, rpm, tpm, tokens, dollars_per_day, dollars_per_month, day, day_end_ms,
--       month, month_end_ms, ttl_ms, may_cost (1: a spent budget refuses it)
--       (a limit < 0 is not set)
-- Returns {reason, retry_after_ms, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms,
--          spent_today_micro, spent_month_micro}: reason 0 = passed (and charged),
--          1 requests, 2 tokens, 4 daily budget, 5 monthly budget.
local key = KEYS[1]
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local dpd = tonumber(ARGV[5])
local dpm = tonumber(ARGV[6])
local day = ARGV[7]
local day_end = tonumber(ARGV[8])
local month = ARGV[9]
local month_end = tonumber(ARGV[10])
local ttl = tonumber(ARGV[11])
local may_cost = ARGV[12] == '1'
local MINUTE = 60000.0

local h = redis.call('HMGET', key, 'rtat', 'rlim', 'ttat', 'tlim', 'dwin', 'dspent', 'mwin', 'mspent')
local st = {
  rtat = tonumber(h[1]) or 0, rlim = tonumber(h[2]) or 0,
  ttat = tonumber(h[3]) or 0, tlim = tonumber(h[4]) or 0,
}

-- What was used stays used, as a count, when a limit changed.
local function rescale(tat, old, new)
  if old ~= new and old > 0 and new > 0 and tat > now then
    return now + (tat - now) * old / new
  end
  return tat
end

local function take(tat, limit, cost)
  if limit == 0 then return nil, MINUTE end
  local interval = MINUTE / limit
  if cost > limit then cost = limit end
  local new_tat = math.max(tat, now) + cost * interval
  local over = new_tat - now - MINUTE
  if over > 1e-6 then return nil, over end
  return new_tat, 0
end

local function state(tat, limit)
  local used = math.max(tat - now, 0)
  local remaining = 0
  if limit > 0 then
    local interval = MINUTE / limit
    remaining = math.floor((MINUTE - used) / interval + 1e-9)
    if remaining < 0 then remaining = 0 end
    if remaining > limit then remaining = limit end
  end
  return remaining, math.floor(used)
end

local reason, rank, wait = 0, -1, 0
local ranks = {[1] = 1, [2] = 2, [4] = 3, [5] = 4}
local function reject(r, w)
  if ranks[r] > rank then reason = r; rank = ranks[r] end
  if w > wait then wait = w end
end

local dspent = 0
if h[5] == day then dspent = tonumber(h[6]) or 0 end
local mspent = 0
if h[7] == month then mspent = tonumber(h[8]) or 0 end
if may_cost and dpd >= 0 and dspent >= dpd then reject(4, day_end - now) end
if may_cost and dpm >= 0 and mspent >= dpm then reject(5, month_end - now) end

local new_r, new_t
if rpm >= 0 then
  st.rtat = rescale(st.rtat, st.rlim, rpm)
  local w
  new_r, w = take(st.rtat, rpm, 1)
  if not new_r then reject(1, w) end
end
if tpm >= 0 then
  st.ttat = rescale(st.ttat, st.tlim, tpm)
  if tokens > 0 then
    local w
    new_t, w = take(st.ttat, tpm, tokens)
    if not new_t then reject(2, w) end
  end
end

if reason == 0 then
  if new_r then st.rtat = new_r end
  if new_t then st.ttat = new_t end
end
if rpm >= 0 or tpm >= 0 then
  redis.call('HSET', key,
    'rtat', string.format('%.6f', st.rtat), 'rlim', math.max(rpm, 0),
    'ttat', string.format('%.6f', st.ttat), 'tlim', math.max(tpm, 0))
  redis.call('PEXPIRE', key, ttl)
end

local rrem, rreset, trem, treset = -1, 0, -1, 0
if rpm >= 0 then rrem, rreset = state(st.rtat, rpm) end
if tpm >= 0 then trem, treset = state(st.ttat, tpm) end
return {reason, math.ceil(wait), rrem, rreset, trem, treset,
  math.floor(dspent * 1e6), math.floor(mspent * 1e6)}

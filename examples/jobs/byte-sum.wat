;; byte-sum: the sum of every input byte as a little-endian u64 (8 bytes of output).
;; The benchmark job of seed 003's end-to-end measurement. Job ABI: sdk/src/job/ABI.md.
(module
  (import "env" "memory" (memory 1))
  (global $sum (mut i64) (i64.const 0))

  ;; Input chunks land at 64 KiB; the memory grows to fit the largest chunk.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (i32.const 65536) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
              (i32.const -1))
          (then unreachable))))
    (i32.const 65536))

  ;; Eight bytes per step: byte lanes are summed in 16-bit lanes (SWAR) and folded often
  ;; enough (every 128 words) that no lane overflows.
  (func (export "feed") (param $ptr i32) (param $len i32)
    (local $p i32) (local $end8 i32) (local $end i32) (local $w i64) (local $acc i64) (local $n i32) (local $s i64)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $end8 (i32.sub (local.get $end) (i32.and (local.get $len) (i32.const 7))))
    (block $done
      (loop $words
        (br_if $done (i32.ge_u (local.get $p) (local.get $end8)))
        (local.set $w (i64.load (local.get $p)))
        (local.set $acc (i64.add (local.get $acc)
          (i64.add (i64.and (local.get $w) (i64.const 0x00FF00FF00FF00FF))
                   (i64.and (i64.shr_u (local.get $w) (i64.const 8)) (i64.const 0x00FF00FF00FF00FF)))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (if (i32.eq (local.get $n) (i32.const 128))
          (then
            (global.set $sum (i64.add (global.get $sum) (call $fold (local.get $acc))))
            (local.set $acc (i64.const 0))
            (local.set $n (i32.const 0))))
        (br $words)))
    (global.set $sum (i64.add (global.get $sum) (call $fold (local.get $acc))))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
        (global.set $sum (i64.add (global.get $sum) (i64.load8_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $tail))))

  ;; Sum of the four 16-bit lanes.
  (func $fold (param $a i64) (result i64)
    (i64.add
      (i64.add (i64.and (local.get $a) (i64.const 0xFFFF)) (i64.and (i64.shr_u (local.get $a) (i64.const 16)) (i64.const 0xFFFF)))
      (i64.add (i64.and (i64.shr_u (local.get $a) (i64.const 32)) (i64.const 0xFFFF)) (i64.shr_u (local.get $a) (i64.const 48)))))

  ;; Output: 8 bytes at address 0; packed (ptr << 32) | len.
  (func (export "finish") (result i64)
    (i64.store (i32.const 0) (global.get $sum))
    (i64.const 8)))

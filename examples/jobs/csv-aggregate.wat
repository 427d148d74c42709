;; csv-aggregate: per-column count, sum, min and max of the numeric fields of a CSV (the
;; first line is the header and is skipped; up to 16 columns; non-numeric fields are
;; ignored). Streamed chunk by chunk. Output (little endian): u32 column count, then for each
;; column four f64: count, sum, min, max. Job ABI: sdk/src/job/ABI.md.
(module
  (import "env" "memory" (memory 1))
  ;; Stats at 0x1000, 32 bytes per column; the output starts 4 bytes before them.
  (global $stats i32 (i32.const 0x1000))
  (global $input i32 (i32.const 0x10000))
  (global $line (mut i32) (i32.const 0))
  (global $col (mut i32) (i32.const 0))
  (global $ncols (mut i32) (i32.const 0))
  (global $valid (mut i32) (i32.const 1))
  (global $neg (mut i32) (i32.const 0))
  (global $seen (mut i32) (i32.const 0))
  (global $frac (mut i32) (i32.const 0))
  (global $fracDigits (mut i32) (i32.const 0))
  (global $mant (mut i64) (i64.const 0))

  (func (export "alloc") (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (global.get $input) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
              (i32.const -1))
          (then unreachable))))
    (global.get $input))

  (func $resetField
    (global.set $valid (i32.const 1))
    (global.set $neg (i32.const 0))
    (global.set $seen (i32.const 0))
    (global.set $frac (i32.const 0))
    (global.set $fracDigits (i32.const 0))
    (global.set $mant (i64.const 0)))

  (func $endField
    (local $v f64) (local $i i32) (local $s i32)
    (if (i32.and (i32.and (global.get $valid) (global.get $seen)) (i32.lt_u (global.get $col) (i32.const 16)))
      (then
        (local.set $v (f64.convert_i64_u (global.get $mant)))
        (local.set $i (global.get $fracDigits))
        (block $d (loop $l
          (br_if $d (i32.eqz (local.get $i)))
          (local.set $v (f64.div (local.get $v) (f64.const 10)))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br $l)))
        (if (global.get $neg) (then (local.set $v (f64.neg (local.get $v)))))
        (local.set $s (i32.add (global.get $stats) (i32.shl (global.get $col) (i32.const 5))))
        (if (f64.eq (f64.load (local.get $s)) (f64.const 0))
          (then
            (f64.store offset=16 (local.get $s) (local.get $v))
            (f64.store offset=24 (local.get $s) (local.get $v))))
        (f64.store (local.get $s) (f64.add (f64.load (local.get $s)) (f64.const 1)))
        (f64.store offset=8 (local.get $s) (f64.add (f64.load offset=8 (local.get $s)) (local.get $v)))
        (f64.store offset=16 (local.get $s) (f64.min (f64.load offset=16 (local.get $s)) (local.get $v)))
        (f64.store offset=24 (local.get $s) (f64.max (f64.load offset=24 (local.get $s)) (local.get $v)))
        (if (i32.ge_u (global.get $col) (global.get $ncols))
          (then (global.set $ncols (i32.add (global.get $col) (i32.const 1)))))))
    (call $resetField))

  (func (export "feed") (param $ptr i32) (param $len i32)
    (local $p i32) (local $end i32) (local $c i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (block $next
          ;; Header line: skip to its end.
          (if (i32.eqz (global.get $line))
            (then
              (if (i32.eq (local.get $c) (i32.const 10)) (then (global.set $line (i32.const 1))))
              (br $next)))
          (if (i32.eq (local.get $c) (i32.const 44))
            (then (call $endField) (global.set $col (i32.add (global.get $col) (i32.const 1))) (br $next)))
          (if (i32.eq (local.get $c) (i32.const 10))
            (then (call $endField) (global.set $col (i32.const 0)) (global.set $line (i32.add (global.get $line) (i32.const 1))) (br $next)))
          (br_if $next (i32.or (i32.eq (local.get $c) (i32.const 13)) (i32.eq (local.get $c) (i32.const 32))))
          (if (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10))
            (then
              (global.set $mant (i64.add (i64.mul (global.get $mant) (i64.const 10)) (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
              (global.set $seen (i32.const 1))
              (if (global.get $frac) (then (global.set $fracDigits (i32.add (global.get $fracDigits) (i32.const 1)))))
              (br $next)))
          (if (i32.and (i32.eq (local.get $c) (i32.const 45)) (i32.and (i32.eqz (global.get $seen)) (i32.eqz (global.get $neg))))
            (then (global.set $neg (i32.const 1)) (br $next)))
          (if (i32.and (i32.eq (local.get $c) (i32.const 46)) (i32.eqz (global.get $frac)))
            (then (global.set $frac (i32.const 1)) (br $next)))
          (global.set $valid (i32.const 0)))
        (br $bytes))))

  (func (export "finish") (result i64)
    (if (i32.and (i32.ne (global.get $line) (i32.const 0)) (i32.or (global.get $seen) (i32.ne (global.get $col) (i32.const 0))))
      (then (call $endField)))
    (i32.store (i32.sub (global.get $stats) (i32.const 4)) (global.get $ncols))
    (i64.or (i64.shl (i64.extend_i32_u (i32.sub (global.get $stats) (i32.const 4))) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 4) (i32.shl (global.get $ncols) (i32.const 5)))))))

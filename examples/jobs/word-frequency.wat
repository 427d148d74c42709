;; word-frequency: counts words (ASCII letters and digits, case-folded) in a text, streamed
;; chunk by chunk. Output: one "word<TAB>count\n" line per distinct word, in table order.
;; Job ABI: sdk/src/job/ABI.md. Layout: current word at 0x8000 (<= 255 bytes), input chunk
;; at 64 KiB (<= 16 MiB), hash table (2^17 slots x 16 bytes) at 17 MiB, word bytes and then
;; the output from 19 MiB upward (the memory grows as needed).
(module
  (import "env" "memory" (memory 1))
  (global $cur i32 (i32.const 0x8000))
  (global $curLen (mut i32) (i32.const 0))
  (global $input i32 (i32.const 0x10000))
  (global $table i32 (i32.const 0x1100000))
  (global $mask i32 (i32.const 0x1FFFF))
  (global $maxWords i32 (i32.const 98304))
  (global $words (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 0x1300000))

  (func $ensure (param $end i32)
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
              (i32.const -1))
          (then unreachable)))))

  (func (export "begin")
    (call $ensure (global.get $heap)))

  (func (export "alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 0x1000000)) (then unreachable))
    (call $ensure (global.get $heap))
    (global.get $input))

  (func $memeq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $no
      (loop $l
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (i32.const 0))

  ;; Counts the current word.
  (func $insert
    (local $h i32) (local $i i32) (local $slot i32) (local $len i32)
    (local.set $len (global.get $curLen))
    (local.set $h (i32.const 0x811C9DC5))
    (local.set $i (i32.const 0))
    (block $hd
      (loop $hl
        (br_if $hd (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u (i32.add (global.get $cur) (local.get $i)))) (i32.const 0x01000193)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $hl)))
    (local.set $i (i32.and (local.get $h) (global.get $mask)))
    (loop $probe
      (local.set $slot (i32.add (global.get $table) (i32.shl (local.get $i) (i32.const 4))))
      (if (i32.eqz (i32.load offset=4 (local.get $slot)))
        (then
          ;; A new word (table full: it is not counted).
          (if (i32.ge_u (global.get $words) (global.get $maxWords)) (then (return)))
          (call $ensure (i32.add (global.get $heap) (local.get $len)))
          (memory.copy (global.get $heap) (global.get $cur) (local.get $len))
          (i32.store (local.get $slot) (global.get $heap))
          (i32.store offset=4 (local.get $slot) (local.get $len))
          (i32.store offset=8 (local.get $slot) (i32.const 1))
          (i32.store offset=12 (local.get $slot) (local.get $h))
          (global.set $heap (i32.add (global.get $heap) (local.get $len)))
          (global.set $words (i32.add (global.get $words) (i32.const 1)))
          (return)))
      (if (i32.and
            (i32.and (i32.eq (i32.load offset=12 (local.get $slot)) (local.get $h))
                     (i32.eq (i32.load offset=4 (local.get $slot)) (local.get $len)))
            (call $memeq (i32.load (local.get $slot)) (global.get $cur) (local.get $len)))
        (then
          (i32.store offset=8 (local.get $slot) (i32.add (i32.load offset=8 (local.get $slot)) (i32.const 1)))
          (return)))
      (local.set $i (i32.and (i32.add (local.get $i) (i32.const 1)) (global.get $mask)))
      (br $probe)))

  (func (export "feed") (param $ptr i32) (param $len i32)
    (local $p i32) (local $end i32) (local $c i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        ;; Fold A-Z to a-z.
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 65)) (i32.const 26))
          (then (local.set $c (i32.or (local.get $c) (i32.const 32)))))
        (if (i32.or (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
                    (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10)))
          (then
            (if (i32.lt_u (global.get $curLen) (i32.const 255))
              (then
                (i32.store8 (i32.add (global.get $cur) (global.get $curLen)) (local.get $c))
                (global.set $curLen (i32.add (global.get $curLen) (i32.const 1))))))
          (else
            (if (global.get $curLen)
              (then (call $insert) (global.set $curLen (i32.const 0))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $bytes))))

  ;; Writes n in decimal at out; returns the new end.
  (func $decimal (param $out i32) (param $n i32) (result i32)
    (local $digits i32) (local $t i32) (local $i i32)
    (local.set $t (local.get $n))
    (local.set $digits (i32.const 1))
    (block $d (loop $l
      (br_if $d (i32.lt_u (local.get $t) (i32.const 10)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
      (br $l)))
    (local.set $i (local.get $digits))
    (loop $w
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $out) (local.get $i)) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $w (i32.gt_u (local.get $i) (i32.const 0))))
    (i32.add (local.get $out) (local.get $digits)))

  (func (export "finish") (result i64)
    (local $i i32) (local $slot i32) (local $out i32) (local $start i32) (local $len i32)
    (if (global.get $curLen) (then (call $insert) (global.set $curLen (i32.const 0))))
    (local.set $start (global.get $heap))
    (local.set $out (local.get $start))
    (block $done
      (loop $slots
        (br_if $done (i32.gt_u (local.get $i) (global.get $mask)))
        (local.set $slot (i32.add (global.get $table) (i32.shl (local.get $i) (i32.const 4))))
        (local.set $len (i32.load offset=4 (local.get $slot)))
        (if (local.get $len)
          (then
            (call $ensure (i32.add (local.get $out) (i32.add (local.get $len) (i32.const 16))))
            (memory.copy (local.get $out) (i32.load (local.get $slot)) (local.get $len))
            (local.set $out (i32.add (local.get $out) (local.get $len)))
            (i32.store8 (local.get $out) (i32.const 9))
            (local.set $out (call $decimal (i32.add (local.get $out) (i32.const 1)) (i32.load offset=8 (local.get $slot))))
            (i32.store8 (local.get $out) (i32.const 10))
            (local.set $out (i32.add (local.get $out) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $slots)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $start)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $out) (local.get $start))))))

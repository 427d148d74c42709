// Changing a process's log level as a whole at run time. pino children copy their parent's
// level when they are made and never follow it afterwards, so this follows every descendant
// of one logger (weakly, through pino's onChild hook) and sets them all together.
import type { Logger } from "./logger.js";

export class LogLevelControl {
  private readonly loggers = new Set<WeakRef<Logger>>();
  private added = 0;

  constructor(private readonly root: Logger) {
    const previous = root.onChild;
    // Children inherit onChild, so descendants of descendants are followed too.
    root.onChild = (child) => {
      this.loggers.add(new WeakRef(child));
      if (++this.added % 1024 === 0) this.prune();
      previous?.(child);
    };
  }

  get level(): string {
    return this.root.level;
  }

  set(level: string): void {
    this.root.level = level;
    for (const ref of this.loggers) {
      const l = ref.deref();
      if (l) l.level = level;
      else this.loggers.delete(ref);
    }
  }

  private prune(): void {
    for (const ref of this.loggers) if (!ref.deref()) this.loggers.delete(ref);
  }
}

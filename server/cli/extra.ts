/** Commands contributed by other rooms of the tree (images build, artifacts, lab). */
type Out = (s: string) => void;

export const extraCommands: {
  imagesBuild?: (argv: string[], out: Out) => Promise<void>;
  byName: Record<string, (argv: string[], out: Out) => Promise<number>>;
} = { byName: {} };
